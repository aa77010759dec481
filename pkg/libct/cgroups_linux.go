package libct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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

// pendingCgroup is a cgroup being made by another goroutine (makeCgroup):
// each method waits for it, and fails as its making failed.
type pendingCgroup struct {
	done chan struct{}
	cg   cgroupManager
	err  error
}

func makeCgroup(version int, path string, r *specs.LinuxResources) *pendingCgroup {
	p := &pendingCgroup{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.cg, p.err = newCgroup(version, path, r)
	}()
	return p
}

func (p *pendingCgroup) wait() error {
	<-p.done
	return p.err
}

func (p *pendingCgroup) Add(pid int) error {
	if err := p.wait(); err != nil {
		return err
	}
	return p.cg.Add(pid)
}
func (p *pendingCgroup) ProcsFiles() ([]string, error) {
	if err := p.wait(); err != nil {
		return nil, err
	}
	return p.cg.ProcsFiles()
}
func (p *pendingCgroup) Update(r *specs.LinuxResources) error {
	if err := p.wait(); err != nil {
		return err
	}
	return p.cg.Update(r)
}
func (p *pendingCgroup) Freeze() error {
	if err := p.wait(); err != nil {
		return err
	}
	return p.cg.Freeze()
}
func (p *pendingCgroup) Thaw() error {
	if err := p.wait(); err != nil {
		return err
	}
	return p.cg.Thaw()
}
func (p *pendingCgroup) Frozen() bool { return p.wait() == nil && p.cg.Frozen() }
func (p *pendingCgroup) Pids() ([]int, error) {
	if err := p.wait(); err != nil {
		return nil, err
	}
	return p.cg.Pids()
}
func (p *pendingCgroup) Stats() (*Stats, error) {
	if err := p.wait(); err != nil {
		return nil, err
	}
	return p.cg.Stats()
}

// Delete of a cgroup whose making failed has nothing to remove (newCgroup
// leaves nothing).
func (p *pendingCgroup) Delete() error {
	if p.wait() != nil {
		return nil
	}
	return p.cg.Delete()
}

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

// cgroupErrClass is the class of a failed cgroup write: a missing file is
// a controller or knob this host's kernel lacks; otherwise by its errno
// (EBUSY: a memory limit below the usage), and a value the kernel refused
// (EINVAL, ERANGE, ...).
func cgroupErrClass(err error) error {
	if c := errdefs.Of(err); c != nil {
		return c // libct's own refusals keep their class
	}
	if errors.Is(err, os.ErrNotExist) {
		return errdefs.ErrNotImplemented
	}
	// The cgroups library turns v1's EBUSY for a memory limit below
	// what the kernel can reclaim into an error of its own, without the
	// errno ("unable to set memory limit to N (current usage: ...)"), and
	// refuses a v2 limit under the usage when asked to check first
	// ("rejecting memory limit ..."): both a failed precondition.
	if msg := err.Error(); strings.Contains(msg, "unable to set memory limit to ") || strings.Contains(msg, "rejecting memory") {
		return errdefs.ErrFailedPrecondition
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

// UpdateCgroup writes resources to the existing cgroup at path (a pod's,
// which kubelet made); one that does not exist is ErrNotFound. Device
// rules cannot be changed this way (refused).
func UpdateCgroup(path string, res *specs.LinuxResources) error {
	if err := validateResources(res); err != nil {
		return err
	}
	if res != nil && len(res.Devices) > 0 {
		return fmt.Errorf("cgroup %s: device rules cannot be updated: %w", path, errdefs.ErrNotImplemented)
	}
	cg, err := loadCgroup(cgroupVersion(), path)
	if err != nil {
		return err
	}
	return cg.Update(res)
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
