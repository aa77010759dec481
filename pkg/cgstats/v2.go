package cgstats

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// V2 reads the unified hierarchy mounted at Root.
type V2 struct {
	root string
}

// NewV2 returns a reader of the unified hierarchy mounted at root
// (/sys/fs/cgroup on a v2 host; a fake tree in tests).
func NewV2(root string) *V2 { return &V2{root: root} }

// Version implements Reader.
func (*V2) Version() int { return 2 }

func (v *V2) file(path, name string) string { return v.root + path + "/" + name }

// Read implements Reader. A section whose controller is not enabled for
// the cgroup (its files are missing while the cgroup is there) is nil.
func (v *V2) Read(path string, want Want) (*Stats, error) {
	path = filepath.Clean("/" + path)
	if path == "/" {
		path = ""
	}
	s := &Stats{}
	detail := want&Detail != 0
	var err error
	if want&CPU != 0 {
		if s.CPU, err = v.cpu(path); err != nil {
			if err = v.gone(path, err); err != nil {
				return nil, err
			}
		}
	}
	if want&Memory != 0 {
		if s.Memory, err = v.memory(path, detail); err != nil {
			if err = v.gone(path, err); err != nil {
				return nil, err
			}
		}
	}
	if want&(Procs|Detail) != 0 {
		if s.Pids, err = v.pids(path, detail); err != nil {
			if err = v.gone(path, err); err != nil {
				return nil, err
			}
		}
	}
	if want&PSI != 0 {
		if s.PSI, err = v.psi(path); err != nil {
			if err = v.gone(path, err); err != nil {
				return nil, err
			}
		}
	}
	if detail {
		if s.IO, err = v.io(path); err != nil {
			if err = v.gone(path, err); err != nil {
				return nil, err
			}
		}
		if s.Spec, err = v.spec(path); err != nil {
			if err = v.gone(path, err); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// gone sorts out a failed read: ErrNotFound when the cgroup is gone, nil
// (the section is left out) when only a controller's files are missing,
// the error otherwise.
func (v *V2) gone(path string, err error) error {
	if !missing(err) {
		return err
	}
	if _, serr := os.Stat(v.root + path); serr != nil && missing(serr) {
		return notFound(path)
	}
	return nil
}

// optional reads a file of a controller that may not be enabled in the
// cgroup: a missing file is not an error.
func optional(err error) error {
	if err != nil && missing(err) {
		return nil
	}
	return err
}

// PIDs implements Reader.
func (v *V2) PIDs(path string) ([]int, error) {
	path = filepath.Clean("/" + path)
	pids, err := readPIDs(v.file(path, "cgroup.procs"))
	if err != nil {
		if missing(err) {
			return nil, notFound(path)
		}
		return nil, err
	}
	return pids, nil
}

func (v *V2) cpu(path string) (*CPUStats, error) {
	c := &CPUStats{}
	// cpu.stat exists in every cgroup (usage, user, system); throttling
	// lines only with the cpu controller enabled.
	err := forEachKV(v.file(path, "cpu.stat"), func(k []byte, n uint64) {
		switch string(k) {
		case "usage_usec":
			c.UsageNs = n * 1000
		case "user_usec":
			c.UserNs = n * 1000
		case "system_usec":
			c.SystemNs = n * 1000
		case "nr_periods":
			c.Periods = n
		case "nr_throttled":
			c.ThrottledPeriods = n
		case "throttled_usec":
			c.ThrottledNs = n * 1000
		}
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (v *V2) memory(path string, detail bool) (*MemoryStats, error) {
	m := &MemoryStats{}
	var err error
	if m.Usage, _, err = readUint(v.file(path, "memory.current")); err != nil {
		return nil, err
	}
	if m.Limit, _, err = readUint(v.file(path, "memory.max")); err != nil {
		return nil, err
	}
	var inactiveFile, kernel, kernelParts uint64
	if err := forEachKV(v.file(path, "memory.stat"), func(k []byte, n uint64) {
		switch string(k) {
		case "anon":
			m.RSS = n
		case "file":
			m.Cache = n
		case "file_mapped":
			m.MappedFile = n
		case "inactive_file":
			inactiveFile = n
		case "pgfault":
			m.PgFault, m.OwnPgFault = n, n
		case "pgmajfault":
			m.PgMajFault, m.OwnPgMajFault = n, n
		case "kernel":
			kernel = n
		case "kernel_stack", "pagetables", "slab", "sock", "percpu", "vmalloc":
			kernelParts += n
		}
	}); err != nil {
		return nil, err
	}
	if m.Usage > inactiveFile {
		m.WorkingSet = m.Usage - inactiveFile
	}
	swap, _, err := readUint(v.file(path, "memory.swap.current"))
	switch {
	case err == nil:
		m.Swap, m.SwapKnown = swap, true
		if m.SwapLimit, _, err = readUint(v.file(path, "memory.swap.max")); err != nil {
			return nil, err
		}
	case !missing(err):
		return nil, err
	}
	if !detail {
		return m, nil
	}
	if kernel == 0 {
		kernel = kernelParts
	}
	m.Kernel = kernel
	if m.MaxUsage, _, err = readUint(v.file(path, "memory.peak")); optional(err) != nil {
		return nil, err
	}
	if err := forEachKV(v.file(path, "memory.events"), func(k []byte, n uint64) {
		switch string(k) {
		case "max":
			m.Failcnt = n
		case "oom_kill":
			m.OOMKills = n
		}
	}); err != nil {
		return nil, err
	}
	return m, nil
}

func (v *V2) pids(path string, detail bool) (*PidsStats, error) {
	p := &PidsStats{}
	var err error
	if p.Procs, err = countLines(v.file(path, "cgroup.procs")); err != nil {
		return nil, err
	}
	if !detail {
		return p, nil
	}
	if p.Threads, _, err = readUint(v.file(path, "pids.current")); optional(err) != nil {
		return nil, err
	}
	if p.Limit, _, err = readUint(v.file(path, "pids.max")); optional(err) != nil {
		return nil, err
	}
	return p, nil
}

func (v *V2) psi(path string) (*PSIStats, error) {
	p := &PSIStats{}
	for _, f := range []struct {
		name string
		dst  **Pressure
	}{{"cpu.pressure", &p.CPU}, {"memory.pressure", &p.Memory}, {"io.pressure", &p.IO}} {
		pr, err := readPressure(v.file(path, f.name))
		if err != nil {
			if missing(err) { // no CONFIG_PSI, or psi=0
				continue
			}
			return nil, err
		}
		*f.dst = pr
	}
	if p.CPU == nil && p.Memory == nil && p.IO == nil {
		return nil, nil
	}
	return p, nil
}

func (v *V2) io(path string) (*IOStats, error) {
	bp, err := readFile(v.file(path, "io.stat"))
	if err != nil {
		return nil, optional(err)
	}
	defer release(bp)
	io := &IOStats{}
	// "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0"
	for _, line := range strings.Split(string(*bp), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		var d IODevice
		if _, err := fmt.Sscanf(fs[0], "%d:%d", &d.Major, &d.Minor); err != nil {
			continue
		}
		for _, kv := range fs[1:] {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			n, err := parseUint([]byte(val))
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				d.ReadBytes = n
			case "wbytes":
				d.WriteBytes = n
			case "rios":
				d.Reads = n
			case "wios":
				d.Writes = n
			}
		}
		io.Devices = append(io.Devices, d)
	}
	return io, nil
}

func (v *V2) spec(path string) (*Spec, error) {
	sp := &Spec{CPUQuota: -1, CPUPeriod: 100000}
	if bp, err := readFile(v.file(path, "cpu.max")); err == nil {
		// "max 100000" or "20000 100000"
		fs := strings.Fields(string(*bp))
		release(bp)
		if len(fs) == 2 {
			if q, err := parseUint([]byte(fs[0])); err == nil {
				sp.CPUQuota = int64(q)
			}
			if p, err := parseUint([]byte(fs[1])); err == nil {
				sp.CPUPeriod = p
			}
		}
	} else if optional(err) != nil {
		return nil, err
	}
	if w, ok, err := readUint(v.file(path, "cpu.weight")); err == nil && ok {
		sp.CPUShares = weightToShares(w)
	} else if optional(err) != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{"memory.max", &sp.MemoryLimit}, {"memory.swap.max", &sp.MemorySwapLimit}, {"memory.low", &sp.MemoryReservation}} {
		n, _, err := readUint(v.file(path, f.name))
		if optional(err) != nil {
			return nil, err
		}
		*f.dst = n
	}
	return sp, nil
}

// weightToShares inverts the OCI shares-to-weight conversion runc and
// crun use (weight = 1 + (shares-2)*9999/262142). Many share values map
// to one weight; this returns the middle of their range.
func weightToShares(w uint64) uint64 {
	if w == 0 {
		return 0
	}
	return 2 + ((w-1)*262142+262142/2)/9999
}
