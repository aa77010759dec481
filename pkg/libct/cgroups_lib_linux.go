//go:build !shim_init

package libct

// The cgroup managers, on containerd's cgroups library. The init binary
// (cmd/shim-init, tag shim_init) manages no cgroup and links none of it.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

// cgroupVersion is 2 on a unified host, 1 on a legacy or hybrid one.
func cgroupVersion() int {
	if cgroups.Mode() == cgroups.Unified {
		return 2
	}
	return 1
}

// CgroupPath turns the spec's cgroupsPath into the path libct uses:
const cgroup2Root = "/sys/fs/cgroup"

func newCgroup(version int, path string, r *specs.LinuxResources) (cgroupManager, error) {
	if r == nil {
		r = &specs.LinuxResources{}
	}
	if version == 2 {
		return newCgroup2(cgroup2Root, path, r)
	}
	c, err := cgroup1.New(cgroup1.StaticPath(path), r)
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w: %w", path, err, cgroupErrClass(err))
	}
	return &cg1{c: c, path: path}, nil
}

func newCgroup2(mountpoint, path string, r *specs.LinuxResources) (*cg2, error) {
	m, err := cgroup2.NewManager(mountpoint, path, cgroup2.ToResources(r))
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w: %w", path, err, cgroupErrClass(err))
	}
	return &cg2{m: m, mountpoint: mountpoint, path: path}, nil
}

func loadCgroup(version int, path string) (cgroupManager, error) {
	if version == 2 {
		if _, err := os.Stat(filepath.Join(cgroup2Root, path)); err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
		}
		m, err := cgroup2.Load(path, cgroup2.WithMountpoint(cgroup2Root))
		if err != nil {
			return nil, fmt.Errorf("load cgroup %s: %w", path, err)
		}
		return &cg2{m: m, mountpoint: cgroup2Root, path: path}, nil
	}
	c, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	return &cg1{c: c, path: path}, nil
}

type cg1 struct {
	c    cgroup1.Cgroup
	path string
}

func (c *cg1) Add(pid int) error { return c.c.Add(cgroup1.Process{Pid: pid}) }

// ProcsFiles: each hierarchy's directory of the cgroup, as cgroup1's Add
// finds it (a static path: the same in every hierarchy).
func (c *cg1) ProcsFiles() ([]string, error) {
	var out []string
	for _, s := range c.c.Subsystems() {
		if p, ok := s.(interface{ Path(string) string }); ok {
			out = append(out, filepath.Join(p.Path(c.path), "cgroup.procs"))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cgroup %s has no hierarchies: %w", c.path, errdefs.ErrInternal)
	}
	return out, nil
}
func (c *cg1) Update(r *specs.LinuxResources) error {
	if err := c.c.Update(r); err != nil {
		return fmt.Errorf("update cgroup: %w: %w", err, cgroupErrClass(err))
	}
	return nil
}

// Freeze freezes the cgroup. A task caught in execve can wait forever for
// a sibling thread the freezer has already frozen (de_thread), leaving the
// cgroup FREEZING: then thaw, let it finish, and try again (as runc does),
// within a bound.
func (c *cg1) Freeze() error {
	dir := filepath.Join("/sys/fs/cgroup/freezer", c.path)
	if _, err := os.Stat(dir); err != nil {
		return c.c.Freeze()
	}
	set := func(v string) error { return os.WriteFile(filepath.Join(dir, "freezer.state"), []byte(v), 0) }
	for i := 0; i < 400; i++ {
		if i > 0 && i%20 == 0 {
			set("THAWED")
			time.Sleep(time.Duration(i/20) * time.Millisecond)
		}
		if err := set("FROZEN"); err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
		if err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		if strings.TrimSpace(string(b)) == "FROZEN" {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	set("THAWED")
	return fmt.Errorf("cgroup %s did not freeze: %w", c.path, errdefs.ErrUnavailable)
}
func (c *cg1) Thaw() error  { return c.c.Thaw() }
func (c *cg1) Frozen() bool { return c.c.State() == cgroup1.Frozen }
func (c *cg1) Pids() ([]int, error) {
	ps, err := c.c.Processes(cgroup1.Freezer, true)
	if err != nil {
		ps, err = c.c.Processes(cgroup1.Pids, true)
	}
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Pid)
	}
	return out, nil
}

// Delete removes the cgroup from every hierarchy. The cgroup libct makes
// has no children, and once its processes are gone one rmdir in each
// hierarchy removes it; cgroup1's Delete, which walks each hierarchy's
// directory for processes first (a stat of every control file), is what
// is left to do when one does not (children, a process still there).
func (c *cg1) Delete() error {
	if files, err := c.ProcsFiles(); err == nil {
		gone := true
		for _, f := range files {
			if err := unix.Rmdir(filepath.Dir(f)); err != nil && err != unix.ENOENT {
				gone = false
			}
		}
		if gone {
			return nil
		}
	}
	err := c.c.Delete()
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
func (c *cg1) Stats() (*Stats, error) {
	m, err := c.c.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return nil, fmt.Errorf("cgroup stats: %w", err)
	}
	var s Stats
	if m.CPU != nil && m.CPU.Usage != nil {
		s.CPU.UsageNanos, s.CPU.UserNanos, s.CPU.KernelNanos = m.CPU.Usage.Total, m.CPU.Usage.User, m.CPU.Usage.Kernel
		s.CPU.PerCPU = m.CPU.Usage.PerCPU
	}
	if m.CPU != nil && m.CPU.Throttling != nil {
		s.CPU.Periods, s.CPU.Throttled, s.CPU.ThrottledNs = m.CPU.Throttling.Periods, m.CPU.Throttling.ThrottledPeriods, m.CPU.Throttling.ThrottledTime
	}
	if mem := m.Memory; mem != nil {
		if mem.Usage != nil {
			s.Memory.Usage, s.Memory.Limit, s.Memory.MaxUsage, s.Memory.Failcnt = mem.Usage.Usage, mem.Usage.Limit, mem.Usage.Max, mem.Usage.Failcnt
		}
		if mem.Swap != nil {
			s.Memory.SwapUsage = mem.Swap.Usage
		}
		s.Memory.Cache = mem.TotalCache
		s.Memory.Raw = map[string]uint64{
			"cache": mem.Cache, "rss": mem.RSS, "total_cache": mem.TotalCache, "total_rss": mem.TotalRSS,
			"total_inactive_file": mem.TotalInactiveFile, "total_active_file": mem.TotalActiveFile,
			"pgfault": mem.PgFault, "pgmajfault": mem.PgMajFault,
		}
	}
	if m.MemoryOomControl != nil {
		s.Memory.OOMKills = m.MemoryOomControl.OomKill
	}
	if m.Pids != nil {
		s.Pids.Current, s.Pids.Limit = m.Pids.Current, m.Pids.Limit
	}
	return &s, nil
}

type cg2 struct {
	m          *cgroup2.Manager
	mountpoint string
	path       string
}

func (c *cg2) Add(pid int) error { return c.m.AddProc(uint64(pid)) }
func (c *cg2) ProcsFiles() ([]string, error) {
	return []string{filepath.Join(c.mountpoint, c.path, "cgroup.procs")}, nil
}
func (c *cg2) Update(r *specs.LinuxResources) error {
	if err := c.m.Update(cgroup2.ToResources(r)); err != nil {
		return fmt.Errorf("update cgroup: %w: %w", err, cgroupErrClass(err))
	}
	return nil
}
func (c *cg2) Freeze() error { return c.m.Freeze() }
func (c *cg2) Thaw() error   { return c.m.Thaw() }
func (c *cg2) Frozen() bool {
	b, err := os.ReadFile(filepath.Join(c.mountpoint, c.path, "cgroup.freeze"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}
func (c *cg2) Pids() ([]int, error) {
	ps, err := c.m.Procs(true)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, int(p))
	}
	return out, nil
}
func (c *cg2) Delete() error {
	err := c.m.Delete()
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
func (c *cg2) Stats() (*Stats, error) {
	m, err := c.m.Stat()
	if err != nil {
		return nil, fmt.Errorf("cgroup stats: %w", err)
	}
	var s Stats
	if cpu := m.CPU; cpu != nil {
		s.CPU.UsageNanos, s.CPU.UserNanos, s.CPU.KernelNanos = cpu.UsageUsec*1000, cpu.UserUsec*1000, cpu.SystemUsec*1000
		s.CPU.Periods, s.CPU.Throttled, s.CPU.ThrottledNs = cpu.NrPeriods, cpu.NrThrottled, cpu.ThrottledUsec*1000
	}
	if mem := m.Memory; mem != nil {
		s.Memory.Usage, s.Memory.Limit, s.Memory.MaxUsage = mem.Usage, mem.UsageLimit, mem.MaxUsage
		s.Memory.SwapUsage, s.Memory.Cache = mem.SwapUsage, mem.File
		s.Memory.Raw = map[string]uint64{"anon": mem.Anon, "file": mem.File, "inactive_file": mem.InactiveFile, "active_file": mem.ActiveFile}
	}
	if m.MemoryEvents != nil {
		s.Memory.OOMKills = m.MemoryEvents.OomKill
	}
	if m.Pids != nil {
		s.Pids.Current, s.Pids.Limit = m.Pids.Current, m.Pids.Limit
	}
	return &s, nil
}
