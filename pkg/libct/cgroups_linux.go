package libct

import (
	"context"
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

// cgroupManager is the part of a cgroup libct uses, over v1 and v2.
type cgroupManager interface {
	Add(pid int) error
	// ProcsFiles are the cgroup.procs files Add writes the pid to.
	ProcsFiles() ([]string, error)
	Update(r *specs.LinuxResources) error
	Freeze() error
	Thaw() error
	Frozen() bool
	Pids() ([]int, error)
	Stats() (*Stats, error)
	Delete() error
}

// cgroupVersion is 2 on a unified host, 1 on a legacy or hybrid one.
func cgroupVersion() int {
	if cgroups.Mode() == cgroups.Unified {
		return 2
	}
	return 1
}

// CgroupPath turns the spec's cgroupsPath into the path libct uses:
// cgroupfs paths only; a systemd "slice:prefix:name" is not supported yet.
func CgroupPath(spec *specs.Spec, id string) (string, error) {
	p := ""
	if spec.Linux != nil {
		p = spec.Linux.CgroupsPath
	}
	if p == "" {
		return "/shim/" + id, nil
	}
	if strings.Count(p, ":") == 2 && !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("cgroupsPath %q is a systemd slice; systemd cgroups are not supported: %w", p, errdefs.ErrNotImplemented)
	}
	p = filepath.Clean("/" + p)
	if p == "/" {
		return "", fmt.Errorf("cgroupsPath %q is the root cgroup: %w", spec.Linux.CgroupsPath, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

func i64(v int64) *int64 { return &v }

// defaultAllowedDevices are always allowed after the spec's device rules,
// as in runc: the default /dev nodes, the pty devices and tun.
var defaultAllowedDevices = []specs.LinuxDeviceCgroup{
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(5), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(7), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(8), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(9), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(5), Minor: i64(0), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(5), Minor: i64(1), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(5), Minor: i64(2), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(136), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(10), Minor: i64(200), Access: "rwm"},
	{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "rwm"},
}

// withDeviceRules returns r with the spec's devices allowed and the
// default allow list appended (a copy; r is not changed).
func withDeviceRules(r *specs.LinuxResources, devs []specs.LinuxDevice) *specs.LinuxResources {
	n := specs.LinuxResources{}
	if r != nil {
		n = *r
	}
	rules := append([]specs.LinuxDeviceCgroup(nil), n.Devices...)
	rules = append(rules, defaultAllowedDevices...)
	for _, d := range devs {
		major, minor := d.Major, d.Minor
		t := d.Type
		if t == "u" {
			t = "c"
		}
		if t == "p" {
			continue
		}
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: t, Major: &major, Minor: &minor, Access: "rwm"})
	}
	n.Devices = rules
	return &n
}

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

// cgroupErrClass is the class of a failed cgroup write: a missing file is
// a controller or knob this host's kernel lacks; otherwise by its errno
// (EBUSY: a memory limit below the usage), and a value the kernel refused
// (EINVAL, ERANGE, ...).
func cgroupErrClass(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return errdefs.ErrNotImplemented
	}
	return errdefs.OSClass(err, errdefs.ErrInvalidArgument)
}

// validateResources rejects values no kernel accepts before anything is
// created, so a bad spec leaves no cgroup behind.
func validateResources(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	bad := func(what string, v any) error {
		return fmt.Errorf("resources: %s %v: %w", what, v, errdefs.ErrInvalidArgument)
	}
	if m := r.Memory; m != nil {
		for name, v := range map[string]*int64{"memory.limit": m.Limit, "memory.reservation": m.Reservation, "memory.swap": m.Swap, "memory.kernel": m.Kernel} {
			if v != nil && *v < -1 {
				return bad(name, *v)
			}
		}
		if m.Limit != nil && *m.Limit > 0 && *m.Limit < 64*1024 {
			return bad("memory.limit below 64KiB:", *m.Limit)
		}
		if m.Limit != nil && m.Swap != nil && *m.Limit > 0 && *m.Swap > 0 && *m.Swap < *m.Limit {
			return bad("memory.swap (memory+swap) below memory.limit:", *m.Swap)
		}
		if m.Swappiness != nil && *m.Swappiness > 100 {
			return bad("memory.swappiness", *m.Swappiness)
		}
	}
	if c := r.CPU; c != nil {
		if c.Quota != nil && *c.Quota != -1 && *c.Quota < 1000 && *c.Quota != 0 {
			return bad("cpu.quota", *c.Quota)
		}
		if c.Period != nil && *c.Period != 0 && (*c.Period < 1000 || *c.Period > 1000000) {
			return bad("cpu.period", *c.Period)
		}
		if c.Shares != nil && *c.Shares != 0 && (*c.Shares < 2 || *c.Shares > 262144) {
			return bad("cpu.shares", *c.Shares)
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil && *p.Limit < -1 {
		return bad("pids.limit", *p.Limit)
	}
	if b := r.BlockIO; b != nil && b.Weight != nil && *b.Weight != 0 && (*b.Weight < 10 || *b.Weight > 1000) {
		return bad("blockIO.weight", *b.Weight)
	}
	return nil
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
func (c *cg1) Delete() error {
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

// killCgroup freezes the cgroup, SIGKILLs every process in it, thaws it,
// and waits (bounded) until it is empty.
func killCgroup(c cgroupManager) error {
	frozen := c.Freeze() == nil
	pids, err := c.Pids()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		if frozen {
			c.Thaw()
		}
		return err
	}
	for _, p := range pids {
		unix.Kill(p, unix.SIGKILL)
	}
	if frozen {
		c.Thaw()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pids, err := c.Pids()
		if err != nil || len(pids) == 0 {
			return nil
		}
		if allZombies(pids) {
			// Dead; their parent reaps them.
			return nil
		}
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("cgroup still has processes after SIGKILL: %w", errdefs.ErrUnavailable)
}

func allZombies(pids []int) bool {
	for _, p := range pids {
		if _, st, err := procStat(p); err == nil && st != 'Z' && st != 'X' {
			return false
		}
	}
	return true
}

// KillCgroup SIGKILLs every process in the cgroup a container's spec
// names and waits (bounded) until none runs; a cgroup that does not exist
// (any more) is not an error. It is for a container whose runtime state is
// gone or cannot be trusted: the cgroup still finds its processes.
func KillCgroup(spec *specs.Spec, id string) error {
	cg, err := specCgroup(spec, id)
	if cg == nil {
		return err
	}
	return killCgroup(cg)
}

// specCgroup loads the cgroup a spec names: nil, nil when it does not
// exist.
func specCgroup(spec *specs.Spec, id string) (cgroupManager, error) {
	p, err := CgroupPath(spec, id)
	if err != nil {
		return nil, err
	}
	cg, err := loadCgroup(cgroupVersion(), p)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	return cg, err
}

// CreateCgroup makes the cgroup a spec names for a process libct does not
// start (the monitor's infra process), with the spec's resources and the
// device rules Create applies, and returns the cgroup.procs files the
// process joins (one per v1 hierarchy). RemoveCgroup undoes it.
func CreateCgroup(spec *specs.Spec, id string) ([]string, error) {
	p, err := CgroupPath(spec, id)
	if err != nil {
		return nil, err
	}
	var res *specs.LinuxResources
	if spec.Linux != nil {
		if err := validateResources(spec.Linux.Resources); err != nil {
			return nil, err
		}
		res = withDeviceRules(spec.Linux.Resources, spec.Linux.Devices)
	}
	cg, err := newCgroup(cgroupVersion(), p, res)
	if err != nil {
		return nil, err
	}
	files, err := cg.ProcsFiles()
	if err != nil {
		cg.Delete()
		return nil, err
	}
	return files, nil
}

// RemoveCgroup kills what is left in the cgroup a spec names and removes
// it; one that does not exist is not an error.
func RemoveCgroup(ctx context.Context, spec *specs.Spec, id string) error {
	cg, err := specCgroup(spec, id)
	if cg == nil {
		return err
	}
	if pids, perr := cg.Pids(); perr != nil || len(pids) > 0 {
		if err := killCgroup(cg); err != nil {
			return err
		}
	}
	for i := 0; ; i++ {
		err := cg.Delete()
		if err == nil || i == 100 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
