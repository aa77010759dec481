// Package cgstats reads the resource usage of a cgroup the way kubelet and
// cAdvisor define it, cheaply enough to be polled for every container of a
// node: each call opens only the files it needs (no per-call mountinfo
// scan, no goroutine per controller, no process spawned), parses them
// without a map, and reuses its read buffers.
//
// One reader per cgroup version: V1 (legacy and hybrid hosts, one
// hierarchy per controller, found once in /proc/self/mountinfo) and V2
// (the unified hierarchy). New picks the host's.
//
// Definitions (both versions):
//   - working set = usage - inactive file pages (never below 0), as
//     cAdvisor computes container_memory_working_set_bytes;
//   - RSS = anonymous memory (v1 total_rss, v2 anon);
//   - a limit of 0 means unlimited (v1 reports ~2^63, v2 "max").
package cgstats

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Want selects what Read reads; each bit costs file reads.
type Want uint

const (
	// CPU: cumulative usage (v1 cpuacct.usage; v2 cpu.stat).
	CPU Want = 1 << iota
	// Memory: usage, limit, memory.stat, swap (v1: 3-4 files; v2: 4-5).
	Memory
	// Procs: the number of processes (cgroup.procs).
	Procs
	// PSI: pressure stall information (v2 only; nothing on v1).
	PSI
	// Detail: everything the cAdvisor-style metrics need on top of the
	// above: user/system time, throttling, max usage, failcnt, kernel
	// memory, OOM kills, threads, block I/O and the configured limits.
	Detail

	// Basic is what the CRI container stats carry.
	Basic = CPU | Memory | PSI
	// All is everything.
	All = CPU | Memory | Procs | PSI | Detail
)

// Stats are one reading of a cgroup. A nil section was not asked for or
// its controller is missing on the host.
type Stats struct {
	CPU    *CPUStats
	Memory *MemoryStats
	Pids   *PidsStats
	IO     *IOStats
	PSI    *PSIStats
	Spec   *Spec
}

// CPUStats are cumulative CPU figures in nanoseconds.
type CPUStats struct {
	UsageNs  uint64
	UserNs   uint64 // Detail
	SystemNs uint64 // Detail
	// Throttling (Detail): CFS periods elapsed and throttled, and the
	// time throttled.
	Periods, ThrottledPeriods, ThrottledNs uint64
}

// MemoryStats are in bytes, fault counts in faults.
type MemoryStats struct {
	Usage      uint64
	WorkingSet uint64
	RSS        uint64
	Cache      uint64
	MappedFile uint64
	// Limit is the cgroup's own limit, 0 when unlimited.
	Limit uint64
	// PgFault and PgMajFault count the cgroup and its descendants (v1
	// total_pgfault, v2 pgfault); the Own* ones the cgroup alone (v1
	// only; v2 equals the hierarchical ones).
	PgFault, PgMajFault       uint64
	OwnPgFault, OwnPgMajFault uint64
	// Swap is the swap in use; SwapKnown says the host accounts swap.
	Swap      uint64
	SwapKnown bool
	// SwapLimit is the limit of swap alone (v1: memsw limit - memory
	// limit), 0 when unlimited or unknown.
	SwapLimit uint64
	// Detail:
	MaxUsage uint64 // v1 max_usage_in_bytes, v2 memory.peak (0 without it)
	Failcnt  uint64 // v1 failcnt, v2 the "max" memory event
	Kernel   uint64
	OOMKills uint64
}

// PidsStats count the cgroup's tasks.
type PidsStats struct {
	Procs   uint64 // processes (cgroup.procs entries)
	Threads uint64 // tasks (pids.current; Detail)
	Limit   uint64 // pids.max, 0 for max (Detail)
}

// IOStats are cumulative block I/O per device (Detail).
type IOStats struct {
	Devices []IODevice
}

// IODevice is the I/O of one block device.
type IODevice struct {
	Major, Minor       uint64
	ReadBytes, Reads   uint64
	WriteBytes, Writes uint64
}

// PSIStats are the pressure stall figures of the three resources (v2).
type PSIStats struct {
	CPU, Memory, IO *Pressure
}

// Pressure is one resource's "some" and "full" lines.
type Pressure struct {
	Some, Full PressureData
}

// PressureData is one line of a pressure file.
type PressureData struct {
	Avg10, Avg60, Avg300 float64
	TotalUs              uint64 // cumulative stall time, microseconds
}

// Spec are the limits configured on the cgroup (Detail).
type Spec struct {
	CPUShares uint64 // v2: cpu.weight converted back to shares
	CPUPeriod uint64 // microseconds
	CPUQuota  int64  // microseconds, -1 for none
	// Memory limits in bytes, 0 for unlimited.
	MemoryLimit, MemorySwapLimit, MemoryReservation uint64
}

// Reader reads cgroups of one hierarchy layout. Paths are cgroup paths
// ("/kubepods/pod1/ctr"), as the OCI spec's cgroupsPath gives them.
type Reader interface {
	// Version is 1 or 2.
	Version() int
	// Read reads the cgroup at path; a missing cgroup is ErrNotFound.
	Read(path string, want Want) (*Stats, error)
	// PIDs lists the processes of the cgroup at path.
	PIDs(path string) ([]int, error)
}

// New returns the reader for this host's cgroups.
func New() (Reader, error) {
	if cgroups.IsCgroup2UnifiedMode() {
		return NewV2("/sys/fs/cgroup"), nil
	}
	return HostV1()
}

// unlimited turns a v1 limit (a page-rounded 2^63-1 for none) into 0.
func unlimited(v uint64) uint64 {
	if v >= 1<<62 {
		return 0
	}
	return v
}

// bufs hold file contents between the open and the parse.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// readFile reads path into a pooled buffer; put it back with release.
// It uses plain open/read/close: no stat, no allocation for small files.
func readFile(path string) (*[]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	bp := bufs.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			*bp = b
			release(bp)
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	*bp = b
	return bp, nil
}

func release(bp *[]byte) {
	if cap(*bp) > 1<<20 { // do not keep a huge cgroup.procs around
		return
	}
	bufs.Put(bp)
}

// readUint reads a file holding one number ("max" is 0 and ok is false).
func readUint(path string) (v uint64, ok bool, err error) {
	bp, err := readFile(path)
	if err != nil {
		return 0, false, err
	}
	defer release(bp)
	b := trimSpace(*bp)
	if string(b) == "max" {
		return 0, false, nil
	}
	v, err = parseUint(b)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", path, err)
	}
	return v, true, nil
}

// readInt reads a file holding one signed number.
func readInt(path string) (int64, error) {
	bp, err := readFile(path)
	if err != nil {
		return 0, err
	}
	defer release(bp)
	v, err := strconv.ParseInt(string(trimSpace(*bp)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// forEachKV calls fn for every "key value" line of path.
func forEachKV(path string, fn func(key []byte, v uint64)) error {
	bp, err := readFile(path)
	if err != nil {
		return err
	}
	defer release(bp)
	eachKV(*bp, fn)
	return nil
}

func eachKV(b []byte, fn func(key []byte, v uint64)) {
	for len(b) > 0 {
		line := b
		if i := indexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		sp := indexByte(line, ' ')
		if sp <= 0 {
			continue
		}
		if v, err := parseUint(trimSpace(line[sp+1:])); err == nil {
			fn(line[:sp], v)
		}
	}
}

// countLines counts the non-empty lines of path (cgroup.procs).
func countLines(path string) (uint64, error) {
	bp, err := readFile(path)
	if err != nil {
		return 0, err
	}
	defer release(bp)
	var n uint64
	b := *bp
	for i, c := range b {
		if c == '\n' && i > 0 && b[i-1] != '\n' {
			n++
		}
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return n, nil
}

// readPIDs parses cgroup.procs.
func readPIDs(path string) ([]int, error) {
	bp, err := readFile(path)
	if err != nil {
		return nil, err
	}
	defer release(bp)
	var out []int
	eachLine(*bp, func(l []byte) {
		if v, err := parseUint(trimSpace(l)); err == nil {
			out = append(out, int(v))
		}
	})
	return out, nil
}

func eachLine(b []byte, fn func([]byte)) {
	for len(b) > 0 {
		line := b
		if i := indexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) > 0 {
			fn(line)
		}
	}
}

// parsePressure parses a PSI file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
func parsePressure(b []byte) (*Pressure, error) {
	p := &Pressure{}
	seen := false
	for len(b) > 0 {
		line := b
		if i := indexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var d *PressureData
		switch {
		case hasPrefix(line, "some "):
			d = &p.Some
		case hasPrefix(line, "full "):
			d = &p.Full
		default:
			continue
		}
		seen = true
		for _, f := range fields(line[5:]) {
			eq := indexByte(f, '=')
			if eq < 0 {
				continue
			}
			k, v := string(f[:eq]), f[eq+1:]
			var err error
			switch k {
			case "avg10":
				d.Avg10, err = strconv.ParseFloat(string(v), 64)
			case "avg60":
				d.Avg60, err = strconv.ParseFloat(string(v), 64)
			case "avg300":
				d.Avg300, err = strconv.ParseFloat(string(v), 64)
			case "total":
				d.TotalUs, err = parseUint(v)
			}
			if err != nil {
				return nil, fmt.Errorf("pressure field %s: %w", k, err)
			}
		}
	}
	if !seen {
		return nil, fmt.Errorf("no pressure lines: %w", errdefs.ErrDataLoss)
	}
	return p, nil
}

func readPressure(path string) (*Pressure, error) {
	bp, err := readFile(path)
	if err != nil {
		return nil, err
	}
	defer release(bp)
	p, err := parsePressure(*bp)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// missing reports whether err says a file or directory does not exist.
func missing(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV)
}

var errNoCgroup = errdefs.ErrNotFound

func notFound(path string) error {
	return fmt.Errorf("cgroup %s: %w", path, errNoCgroup)
}

// Small byte helpers (no strings allocation on the hot path).

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func hasPrefix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\n' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func fields(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		for len(b) > 0 && b[0] == ' ' {
			b = b[1:]
		}
		if len(b) == 0 {
			break
		}
		i := indexByte(b, ' ')
		if i < 0 {
			i = len(b)
		}
		out = append(out, b[:i])
		b = b[i:]
	}
	return out
}

var errSyntax = errors.New("not a number")

func parseUint(b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, errSyntax
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errSyntax
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, errSyntax
		}
		v = v*10 + d
	}
	return v, nil
}
