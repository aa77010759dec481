//go:build !shim_init

package libct

// The cgroup managers, on the OCI project's cgroups library (runc's): its
// cgroupfs managers for v1 (fs) and v2 (fs2), and its device controller
// (v1 files, a v2 eBPF program it loads itself). It starts light: no
// protobuf or eBPF packages to initialise (containerd's library brought
// both: about 3.5 ms of every `shim oci` command and monitor helper
// here). The init binary (cmd/shim-init, tag shim_init)
// manages no cgroup and links none of it.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/cgroups"
	_ "github.com/opencontainers/cgroups/devices" // the device controllers (v1 and v2)
	devices "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/fs2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

// cgroupVersion is 2 on a unified host, 1 on a legacy or hybrid one.
func cgroupVersion() int {
	if cgroups.IsCgroup2UnifiedMode() {
		return 2
	}
	return 1
}

const cgroup2Root = "/sys/fs/cgroup"

// cgroup is a container's cgroup: one directory per v1 hierarchy, or one
// on v2.
type cgroup struct {
	m       cgroups.Manager
	version int
	path    string
}

// newManager is the library's manager of the cgroup at path.
func newManager(version int, path string, r *cgroups.Resources) (cgroups.Manager, error) {
	c := &cgroups.Cgroup{Path: path, Resources: r}
	if version == 2 {
		return fs2.NewManager(c, filepath.Join(cgroup2Root, path))
	}
	paths, err := v1Paths(path)
	if err != nil {
		return nil, err
	}
	return fs.NewManager(c, paths)
}

// v1Paths are the directories of the v1 cgroup at path (absolute: from
// each hierarchy's root), keyed as the library's v1 manager names its
// controllers: under each hierarchy's mount point, which v1Mounts reads
// once per process (the mount table and /proc/self/cgroup; the library
// reads the mount table once per process too).
// (The library's own lookup probes each controller's default directory
// with four system calls: about 1.3 ms here.) Named hierarchies other
// than systemd's have no controller in the library and are left out; a
// host without a devices hierarchy is refused, as the library does.
// Unlike the library, libct leaves a hybrid host's cgroup2 hierarchy out
// (as containerd's library did): it has no controllers, and moving a
// process into a cgroup2 cgroup takes about 1 ms here (the v1 ones 40
// µs), on every create and exec. TestV1Paths checks the rest is the
// library's own.
func v1Paths(path string) (map[string]string, error) {
	mounts, err := v1Mounts()
	if err != nil {
		return nil, err
	}
	paths := make(map[string]string, len(mounts))
	for key, mnt := range mounts {
		paths[key] = filepath.Join(mnt, path)
	}
	return paths, nil
}

// v1Mounts maps each v1 controller the library manages to its hierarchy's
// mount point.
var v1Mounts = sync.OnceValues(func() (map[string]string, error) {
	mounts, err := cgroups.GetCgroupMounts(false)
	if err != nil {
		return nil, err
	}
	own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for _, m := range mounts {
		for _, sub := range m.Subsystems {
			key := sub
			if _, named := own[cgroups.CgroupNamePrefix+sub]; named {
				if sub != "systemd" {
					continue
				}
				key = cgroups.CgroupNamePrefix + sub
			}
			out[key] = m.Mountpoint
		}
	}
	if out["devices"] == "" {
		return nil, fmt.Errorf("no devices cgroup hierarchy: %w", errdefs.ErrNotImplemented)
	}
	return out, nil
})

func newCgroup(version int, path string, r *specs.LinuxResources) (cgroupManager, error) {
	res, err := toResources(version, r)
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	// The v1 devices directory is made even when no rule is given:
	// Apply writes no rule, Set then skips the controller.
	skip := res.SkipDevices
	res.SkipDevices = false
	m, err := newManager(version, path, res)
	if err == nil {
		// -1: make the directories (and on v1 the cpuset's parents),
		// join nothing; the init joins through ProcsFiles.
		if err = m.Apply(-1); err == nil {
			res.SkipDevices = skip
			err = m.Set(res)
		}
		if err == nil {
			err = setKernelTCP(version, m, r)
		}
		if err == nil {
			err = checkBurst(version, m, r)
		}
		if err != nil {
			// What Apply made: the directories, empty.
			m.Destroy()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w: %w", path, err, cgroupErrClass(err))
	}
	return &cgroup{m: m, version: version, path: path}, nil
}

func loadCgroup(version int, path string) (cgroupManager, error) {
	m, err := newManager(version, path, &cgroups.Resources{})
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	if !m.Exists() {
		return nil, fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
	}
	return &cgroup{m: m, version: version, path: path}, nil
}

func (c *cgroup) Add(pid int) error {
	files, err := c.ProcsFiles()
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := cgroups.WriteCgroupProc(filepath.Dir(f), pid); err != nil {
			return err
		}
	}
	return nil
}

// ProcsFiles: the cgroup.procs file of each directory of the cgroup (every
// v1 hierarchy the manager found).
func (c *cgroup) ProcsFiles() ([]string, error) {
	var out []string
	for _, dir := range c.m.GetPaths() {
		if dir == "" {
			continue
		}
		out = append(out, filepath.Join(dir, "cgroup.procs"))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cgroup %s has no directories: %w", c.path, errdefs.ErrInternal)
	}
	return out, nil
}

func (c *cgroup) Update(r *specs.LinuxResources) error {
	res, err := toResources(c.version, r)
	if err == nil {
		if err = c.m.Set(res); err == nil {
			err = setKernelTCP(c.version, c.m, r)
		}
		if err == nil {
			err = checkBurst(c.version, c.m, r)
		}
	}
	if err != nil {
		return fmt.Errorf("update cgroup: %w: %w", err, cgroupErrClass(err))
	}
	return nil
}

// Freeze freezes the cgroup; on v1 the library thaws and retries a
// cgroup caught FREEZING (a task in execve waiting for a frozen sibling
// thread), as runc does.
func (c *cgroup) Freeze() error {
	if err := c.m.Freeze(cgroups.Frozen); err != nil {
		if !errdefs.Classified(err) {
			// v1: still FREEZING after the library's retries.
			return fmt.Errorf("freeze cgroup %s: %w: %w", c.path, err, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("freeze: %w", err)
	}
	return nil
}
func (c *cgroup) Thaw() error {
	if err := c.m.Freeze(cgroups.Thawed); err != nil {
		return fmt.Errorf("thaw: %w", err)
	}
	return nil
}

// Frozen reads the freezer once (the library's v1 GetFreezerState waits
// while a cgroup is FREEZING, without bound: state and list must not).
func (c *cgroup) Frozen() bool {
	if c.version == 1 {
		dir := c.m.GetPaths()["freezer"]
		b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
		return dir != "" && err == nil && strings.TrimSpace(string(b)) == "FROZEN"
	}
	s, err := c.m.GetFreezerState()
	return err == nil && s == cgroups.Frozen
}
func (c *cgroup) Pids() ([]int, error) { return c.m.GetAllPids() }

// Delete removes the cgroup. The cgroup libct makes has no children, and
// once its processes are gone one rmdir per directory removes it; the
// library's Destroy (which walks each directory for children and retries)
// is what is left to do when one does not.
func (c *cgroup) Delete() error {
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
	err := c.m.Destroy()
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (c *cgroup) Stats() (*Stats, error) {
	m, err := c.m.GetStats()
	if err != nil {
		return nil, fmt.Errorf("cgroup stats: %w", err)
	}
	var s Stats
	cpu := m.CpuStats
	s.CPU.UsageNanos, s.CPU.UserNanos, s.CPU.KernelNanos = cpu.CpuUsage.TotalUsage, cpu.CpuUsage.UsageInUsermode, cpu.CpuUsage.UsageInKernelmode
	s.CPU.PerCPU = cpu.CpuUsage.PercpuUsage
	s.CPU.Periods, s.CPU.Throttled, s.CPU.ThrottledNs = cpu.ThrottlingData.Periods, cpu.ThrottlingData.ThrottledPeriods, cpu.ThrottlingData.ThrottledTime
	mem := m.MemoryStats
	s.Memory.Usage, s.Memory.Limit, s.Memory.MaxUsage, s.Memory.Failcnt = mem.Usage.Usage, mem.Usage.Limit, mem.Usage.MaxUsage, mem.Usage.Failcnt
	s.Memory.SwapUsage, s.Memory.Cache = mem.SwapUsage.Usage, mem.Cache
	keys := []string{"anon", "file", "inactive_file", "active_file"}
	if c.version == 1 {
		// The hierarchical figures, as the kernel counts the cgroup
		// against its limit.
		s.Memory.Cache = mem.Stats["total_cache"]
		keys = []string{"cache", "rss", "total_cache", "total_rss", "total_inactive_file", "total_active_file", "pgfault", "pgmajfault"}
	}
	s.Memory.Raw = make(map[string]uint64, len(keys))
	for _, k := range keys {
		s.Memory.Raw[k] = mem.Stats[k]
	}
	if n, err := c.m.OOMKillCount(); err == nil {
		s.Memory.OOMKills = n
	}
	s.Pids.Current, s.Pids.Limit = m.PidsStats.Current, m.PidsStats.Limit
	return &s, nil
}

// toResources is the library's form of the spec's resources. What the
// library or the kernel cannot apply is refused, never dropped: the kernel
// memory limit (gone from the kernel), memory.use_hierarchy off (always on
// since 5.x); on v2, which has no such knobs, the kernel TCP limit,
// swappiness, disabling the OOM killer, real-time CPU time, blkio leaf
// weights and the network class and priorities. The v1 CPU burst is
// checked once the cgroup exists (checkBurst). Shares become the v2
// weight here (the library leaves that to its caller).
func toResources(version int, r *specs.LinuxResources) (*cgroups.Resources, error) {
	out := &cgroups.Resources{}
	if r == nil {
		r = &specs.LinuxResources{}
	}
	no := func(what string) (*cgroups.Resources, error) {
		return nil, fmt.Errorf("%s: cgroup v%d has no such setting: %w", what, version, errdefs.ErrNotImplemented)
	}
	// No rules (an update without devices, a spec without a linux
	// section): the devices stay as they are.
	out.SkipDevices = len(r.Devices) == 0
	for _, d := range r.Devices {
		rule := &devices.Rule{Major: devices.Wildcard, Minor: devices.Wildcard, Permissions: devices.Permissions(d.Access), Allow: d.Allow}
		switch d.Type {
		case "", "a":
			rule.Type = devices.WildcardDevice
		case "b":
			rule.Type = devices.BlockDevice
		case "c":
			rule.Type = devices.CharDevice
		default:
			return nil, fmt.Errorf("device rule type %q: %w", d.Type, errdefs.ErrInvalidArgument)
		}
		if d.Major != nil {
			rule.Major = *d.Major
		}
		if d.Minor != nil {
			rule.Minor = *d.Minor
		}
		out.Devices = append(out.Devices, rule)
	}
	if m := r.Memory; m != nil {
		if m.Kernel != nil {
			return nil, fmt.Errorf("memory.kernel: kernel memory limits are gone from the kernel: %w", errdefs.ErrNotImplemented)
		}
		if version == 2 {
			switch {
			case m.KernelTCP != nil:
				return no("memory.kernelTCP")
			case m.Swappiness != nil:
				return no("memory.swappiness")
			case m.DisableOOMKiller != nil && *m.DisableOOMKiller:
				return no("memory.disableOOMKiller")
			}
		}
		if m.UseHierarchy != nil && !*m.UseHierarchy {
			return nil, fmt.Errorf("memory.useHierarchy false: the kernel always uses the hierarchy: %w", errdefs.ErrNotImplemented)
		}
		out.Memory = deref(m.Limit)
		out.MemoryReservation = deref(m.Reservation)
		out.MemorySwap = deref(m.Swap)
		out.MemorySwappiness = m.Swappiness
		out.OomKillDisable = m.DisableOOMKiller != nil && *m.DisableOOMKiller
		out.MemoryCheckBeforeUpdate = m.CheckBeforeUpdate != nil && *m.CheckBeforeUpdate
	}
	if c := r.CPU; c != nil {
		if version == 2 && (deref(c.RealtimeRuntime) != 0 || deref(c.RealtimePeriod) != 0) {
			return no("cpu.realtimeRuntime and realtimePeriod")
		}
		out.CpuShares = deref(c.Shares)
		if version == 2 && out.CpuShares != 0 {
			out.CpuWeight = cgroups.ConvertCPUSharesToCgroupV2Value(out.CpuShares)
		}
		out.CpuQuota = deref(c.Quota)
		out.CpuBurst = c.Burst
		out.CpuPeriod = deref(c.Period)
		out.CpuRtRuntime = deref(c.RealtimeRuntime)
		out.CpuRtPeriod = deref(c.RealtimePeriod)
		out.CpusetCpus, out.CpusetMems = c.Cpus, c.Mems
		out.CPUIdle = c.Idle
	}
	if r.Pids != nil {
		out.PidsLimit = r.Pids.Limit
	}
	if b := r.BlockIO; b != nil {
		out.BlkioWeight, out.BlkioLeafWeight = deref(b.Weight), deref(b.LeafWeight)
		for _, d := range b.WeightDevice {
			if version == 2 && deref(d.LeafWeight) != 0 {
				return no("blockIO.weightDevice leafWeight")
			}
			out.BlkioWeightDevice = append(out.BlkioWeightDevice, cgroups.NewWeightDevice(d.Major, d.Minor, deref(d.Weight), deref(d.LeafWeight)))
		}
		throttle := func(ds []specs.LinuxThrottleDevice) []*cgroups.ThrottleDevice {
			var o []*cgroups.ThrottleDevice
			for _, d := range ds {
				o = append(o, cgroups.NewThrottleDevice(d.Major, d.Minor, d.Rate))
			}
			return o
		}
		out.BlkioThrottleReadBpsDevice = throttle(b.ThrottleReadBpsDevice)
		out.BlkioThrottleWriteBpsDevice = throttle(b.ThrottleWriteBpsDevice)
		out.BlkioThrottleReadIOPSDevice = throttle(b.ThrottleReadIOPSDevice)
		out.BlkioThrottleWriteIOPSDevice = throttle(b.ThrottleWriteIOPSDevice)
		if version == 2 && out.BlkioLeafWeight != 0 {
			return no("blockIO.leafWeight")
		}
	}
	for _, h := range r.HugepageLimits {
		out.HugetlbLimit = append(out.HugetlbLimit, &cgroups.HugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
	}
	if n := r.Network; n != nil {
		if version == 2 && (deref(n.ClassID) != 0 || len(n.Priorities) > 0) {
			return no("network.classID and priorities")
		}
		out.NetClsClassid = deref(n.ClassID)
		for _, p := range n.Priorities {
			out.NetPrioIfpriomap = append(out.NetPrioIfpriomap, &cgroups.IfPrioMap{Interface: p.Name, Priority: int64(p.Priority)})
		}
	}
	if len(r.Rdma) > 0 {
		out.Rdma = make(map[string]cgroups.LinuxRdma, len(r.Rdma))
		for k, v := range r.Rdma {
			out.Rdma[k] = cgroups.LinuxRdma{HcaHandles: v.HcaHandles, HcaObjects: v.HcaObjects}
		}
	}
	if len(r.Unified) > 0 {
		out.Unified = r.Unified
	}
	return out, nil
}

// setKernelTCP writes the v1 kernel TCP memory limit, which the library
// does not carry (toResources refuses it on v2).
func setKernelTCP(version int, m cgroups.Manager, r *specs.LinuxResources) error {
	if version != 1 || r == nil || r.Memory == nil || r.Memory.KernelTCP == nil {
		return nil
	}
	dir := m.GetPaths()["memory"]
	if dir == "" {
		return fmt.Errorf("memory.kernelTCP: no memory hierarchy: %w", errdefs.ErrNotImplemented)
	}
	return cgroups.WriteFile(dir, "memory.kmem.tcp.limit_in_bytes", strconv.FormatInt(*r.Memory.KernelTCP, 10))
}

// checkBurst refuses a v1 CPU burst on a kernel without the knob, which
// the library skips without a word.
func checkBurst(version int, m cgroups.Manager, r *specs.LinuxResources) error {
	if version != 1 || r == nil || r.CPU == nil || deref(r.CPU.Burst) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(m.GetPaths()["cpu"], "cpu.cfs_burst_us")); err != nil {
		return fmt.Errorf("cpu.burst: this kernel has no cpu.cfs_burst_us: %w", errdefs.ErrNotImplemented)
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
