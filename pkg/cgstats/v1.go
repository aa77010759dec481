package cgstats

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// V1 reads cgroup v1 hierarchies (legacy and hybrid hosts).
type V1 struct {
	// dirs maps a controller ("cpuacct", "memory", ...) to the directory
	// its hierarchy's root cgroup is at.
	dirs map[string]string
	// procs is the controller whose cgroup.procs counts processes.
	procs string
}

// NewV1 returns a reader over the given controller directories; a
// controller missing from dirs is not read.
func NewV1(dirs map[string]string) *V1 {
	v := &V1{dirs: dirs}
	for _, c := range []string{"pids", "memory", "cpuacct", "cpu", "freezer"} {
		if dirs[c] != "" {
			v.procs = c
			break
		}
	}
	return v
}

// HostV1 finds this host's v1 controllers in /proc/self/mountinfo, once.
func HostV1() (*V1, error) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup"))
	if err != nil {
		return nil, fmt.Errorf("cgroup mounts: %w", err)
	}
	dirs := map[string]string{}
	for _, m := range ms {
		if m.Root != "/" {
			// A view of a sub-tree (a cgroup namespace or a container's
			// mount): paths from the spec are not relative to it.
			continue
		}
		for _, opt := range strings.Split(m.VFSOptions, ",") {
			switch opt {
			case "cpu", "cpuacct", "memory", "pids", "blkio", "freezer":
				if dirs[opt] == "" {
					dirs[opt] = m.Mountpoint
				}
			}
		}
	}
	if dirs["memory"] == "" && dirs["cpuacct"] == "" {
		return nil, fmt.Errorf("no cgroup v1 cpuacct or memory hierarchy is mounted")
	}
	return NewV1(dirs), nil
}

// Version implements Reader.
func (*V1) Version() int { return 1 }

func (v *V1) file(ctl, path, name string) string {
	return v.dirs[ctl] + path + "/" + name
}

// Read implements Reader.
func (v *V1) Read(path string, want Want) (*Stats, error) {
	path = filepath.Clean("/" + path)
	if path == "/" {
		path = ""
	}
	s := &Stats{}
	if want&CPU != 0 && v.dirs["cpuacct"] != "" {
		c, err := v.cpu(path, want&Detail != 0)
		if err != nil {
			return nil, v.gone(path, err)
		}
		s.CPU = c
	}
	if want&Memory != 0 && v.dirs["memory"] != "" {
		m, err := v.memory(path, want&Detail != 0)
		if err != nil {
			return nil, v.gone(path, err)
		}
		s.Memory = m
	}
	if want&(Procs|Detail) != 0 && v.procs != "" {
		p, err := v.pids(path, want&Detail != 0)
		if err != nil {
			return nil, v.gone(path, err)
		}
		s.Pids = p
	}
	if want&Detail != 0 {
		if v.dirs["blkio"] != "" {
			io, err := v.io(path)
			if err != nil {
				return nil, v.gone(path, err)
			}
			s.IO = io
		}
		sp, err := v.spec(path)
		if err != nil {
			return nil, v.gone(path, err)
		}
		s.Spec = sp
	}
	return s, nil
}

// gone turns a missing file into ErrNotFound for the cgroup: the files
// read here exist in every cgroup of a mounted controller.
func (v *V1) gone(path string, err error) error {
	if missing(err) {
		return notFound(path)
	}
	return err
}

// PIDs implements Reader.
func (v *V1) PIDs(path string) ([]int, error) {
	if v.procs == "" {
		return nil, fmt.Errorf("no cgroup hierarchy to list processes from")
	}
	pids, err := readPIDs(v.file(v.procs, filepath.Clean("/"+path), "cgroup.procs"))
	if err != nil {
		return nil, v.gone(path, err)
	}
	return pids, nil
}

func (v *V1) cpu(path string, detail bool) (*CPUStats, error) {
	c := &CPUStats{}
	var err error
	if c.UsageNs, _, err = readUint(v.file("cpuacct", path, "cpuacct.usage")); err != nil {
		return nil, err
	}
	if !detail {
		return c, nil
	}
	user, _, errU := readUint(v.file("cpuacct", path, "cpuacct.usage_user"))
	sys, _, errS := readUint(v.file("cpuacct", path, "cpuacct.usage_sys"))
	if errU == nil && errS == nil {
		c.UserNs, c.SystemNs = user, sys
	} else if err := forEachKV(v.file("cpuacct", path, "cpuacct.stat"), func(k []byte, n uint64) {
		// USER_HZ is 100 on every Linux ABI Go supports.
		switch string(k) {
		case "user":
			c.UserNs = n * 10_000_000
		case "system":
			c.SystemNs = n * 10_000_000
		}
	}); err != nil {
		return nil, err
	}
	if v.dirs["cpu"] != "" {
		if err := forEachKV(v.file("cpu", path, "cpu.stat"), func(k []byte, n uint64) {
			switch string(k) {
			case "nr_periods":
				c.Periods = n
			case "nr_throttled":
				c.ThrottledPeriods = n
			case "throttled_time":
				c.ThrottledNs = n
			}
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (v *V1) memory(path string, detail bool) (*MemoryStats, error) {
	m := &MemoryStats{}
	var err error
	if m.Usage, _, err = readUint(v.file("memory", path, "memory.usage_in_bytes")); err != nil {
		return nil, err
	}
	limit, _, err := readUint(v.file("memory", path, "memory.limit_in_bytes"))
	if err != nil {
		return nil, err
	}
	m.Limit = unlimited(limit)
	var inactiveFile uint64
	if err := forEachKV(v.file("memory", path, "memory.stat"), func(k []byte, n uint64) {
		switch string(k) {
		case "total_rss":
			m.RSS = n
		case "total_cache":
			m.Cache = n
		case "total_mapped_file":
			m.MappedFile = n
		case "total_inactive_file":
			inactiveFile = n
		case "total_pgfault":
			m.PgFault = n
		case "total_pgmajfault":
			m.PgMajFault = n
		case "pgfault":
			m.OwnPgFault = n
		case "pgmajfault":
			m.OwnPgMajFault = n
		case "total_swap":
			m.Swap, m.SwapKnown = n, true
		}
	}); err != nil {
		return nil, err
	}
	if m.Usage > inactiveFile {
		m.WorkingSet = m.Usage - inactiveFile
	}
	if m.SwapKnown && m.Limit > 0 {
		// memsw is memory+swap: the swap limit is what is above memory.
		memsw, _, err := readUint(v.file("memory", path, "memory.memsw.limit_in_bytes"))
		if err != nil && !missing(err) {
			return nil, err
		}
		if memsw = unlimited(memsw); memsw > m.Limit {
			m.SwapLimit = memsw - m.Limit
		}
	}
	if !detail {
		return m, nil
	}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{"memory.max_usage_in_bytes", &m.MaxUsage}, {"memory.failcnt", &m.Failcnt}, {"memory.kmem.usage_in_bytes", &m.Kernel}} {
		n, _, err := readUint(v.file("memory", path, f.name))
		if err != nil && !missing(err) { // kmem is gone from recent kernels
			return nil, err
		}
		*f.dst = n
	}
	if err := forEachKV(v.file("memory", path, "memory.oom_control"), func(k []byte, n uint64) {
		if string(k) == "oom_kill" {
			m.OOMKills = n
		}
	}); err != nil {
		return nil, err
	}
	return m, nil
}

func (v *V1) pids(path string, detail bool) (*PidsStats, error) {
	p := &PidsStats{}
	var err error
	if p.Procs, err = countLines(v.file(v.procs, path, "cgroup.procs")); err != nil {
		return nil, err
	}
	if !detail || v.dirs["pids"] == "" {
		return p, nil
	}
	if p.Threads, _, err = readUint(v.file("pids", path, "pids.current")); err != nil {
		return nil, err
	}
	if p.Limit, _, err = readUint(v.file("pids", path, "pids.max")); err != nil {
		return nil, err
	}
	return p, nil
}

func (v *V1) io(path string) (*IOStats, error) {
	io := &IOStats{}
	dev := func(maj, min uint64) *IODevice {
		for i := range io.Devices {
			if d := &io.Devices[i]; d.Major == maj && d.Minor == min {
				return d
			}
		}
		io.Devices = append(io.Devices, IODevice{Major: maj, Minor: min})
		return &io.Devices[len(io.Devices)-1]
	}
	for _, f := range []struct {
		name        string
		read, write func(d *IODevice) *uint64
	}{
		{"blkio.throttle.io_service_bytes", func(d *IODevice) *uint64 { return &d.ReadBytes }, func(d *IODevice) *uint64 { return &d.WriteBytes }},
		{"blkio.throttle.io_serviced", func(d *IODevice) *uint64 { return &d.Reads }, func(d *IODevice) *uint64 { return &d.Writes }},
	} {
		bp, err := readFile(v.file("blkio", path, f.name))
		if err != nil {
			return nil, err
		}
		// "8:0 Read 4096" lines, and a "Total N" line.
		for _, line := range strings.Split(string(*bp), "\n") {
			fs := strings.Fields(line)
			if len(fs) != 3 {
				continue
			}
			var maj, min uint64
			if _, err := fmt.Sscanf(fs[0], "%d:%d", &maj, &min); err != nil {
				continue
			}
			n, err := parseUint([]byte(fs[2]))
			if err != nil {
				continue
			}
			switch fs[1] {
			case "Read":
				*f.read(dev(maj, min)) = n
			case "Write":
				*f.write(dev(maj, min)) = n
			}
		}
		release(bp)
	}
	return io, nil
}

func (v *V1) spec(path string) (*Spec, error) {
	sp := &Spec{CPUQuota: -1}
	if v.dirs["cpu"] != "" {
		var err error
		if sp.CPUShares, _, err = readUint(v.file("cpu", path, "cpu.shares")); err != nil {
			return nil, err
		}
		if sp.CPUPeriod, _, err = readUint(v.file("cpu", path, "cpu.cfs_period_us")); err != nil && !missing(err) {
			return nil, err
		}
		if q, err := readInt(v.file("cpu", path, "cpu.cfs_quota_us")); err == nil {
			sp.CPUQuota = q
		} else if !missing(err) {
			return nil, err
		}
	}
	if v.dirs["memory"] != "" {
		for _, f := range []struct {
			name string
			dst  *uint64
		}{{"memory.limit_in_bytes", &sp.MemoryLimit}, {"memory.memsw.limit_in_bytes", &sp.MemorySwapLimit}, {"memory.soft_limit_in_bytes", &sp.MemoryReservation}} {
			n, _, err := readUint(v.file("memory", path, f.name))
			if err != nil && !missing(err) {
				return nil, err
			}
			*f.dst = unlimited(n)
		}
	}
	return sp, nil
}
