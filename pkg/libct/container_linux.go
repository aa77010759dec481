package libct

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"golang.org/x/sys/unix"
)

// Container is a container in a state directory. Its methods are safe for
// use by the process that created it (the parent of its init) and by any
// other process that loaded it.
type Container struct {
	root string
	dir  string

	mu sync.Mutex
	st *stored
	cg cgroupManager

	// Console is the pty master when the spec asked for a terminal and
	// no console socket was given (creating process only).
	Console *os.File

	initConn *net.UnixConn // creating process only: sees exec errors after Start
}

var nsFlags = map[specs.LinuxNamespaceType]uint32{
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.UserNamespace:    unix.CLONE_NEWUSER,
	specs.CgroupNamespace:  unix.CLONE_NEWCGROUP,
	specs.TimeNamespace:    unix.CLONE_NEWTIME,
}

// procNSName is the /proc/<pid>/ns entry of a namespace type.
var procNSName = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.MountNamespace: "mnt",
	specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts", specs.UserNamespace: "user",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}

// Create sets up a container from spec and leaves its init waiting for
// Start. The calling process becomes the parent of the init.
func Create(ctx context.Context, stateRoot, id string, spec *specs.Spec, bundle string, opts CreateOpts) (_ *Container, retErr error) {
	p, err := prepare(ctx, stateRoot, id, spec, bundle, true)
	if err != nil {
		return nil, err
	}
	c := p.c
	var proc *started
	defer func() {
		if retErr == nil {
			return
		}
		if proc != nil {
			proc.kill() // also closes c.Console and c.initConn
		}
		p.undo()
	}()
	fifoFile, err := os.OpenFile(filepath.Join(c.dir, fifoName), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("exec fifo: %w", err)
	}
	defer fifoFile.Close()
	ip := &initProcess{
		launch: launch{bs: p.bs, extra: opts.ExtraFiles, fifo: fifoFile, stdio: stdio{opts.Stdin, opts.Stdout, opts.Stderr},
			oom: p.oom(), cg: c.cg, idMaps: spec.Linux},
		cfg:         p.config(opts),
		consoleSock: opts.ConsoleSocket,
	}
	if pc, ok := c.cg.(*pendingCgroup); ok {
		ip.cfg.cgroupMade = func() { pc.wait() }
	}
	ip.plan = cplanFor(ctx, ip.cfg, true)
	ip.bs.cinit = ip.plan != nil
	// The state is recorded while the init sets the container up (its
	// pid is all the record needs): on another CPU, off the create's
	// path. Until Create returns, another process may see the container
	// "created" with an init that is not ready (a start waits on its exec
	// fifo); a failed create removes it with the state dir.
	var recorded chan error
	ip.onPid = func(pid int) {
		c.st = p.stored(opts.NoPivot)
		recorded = make(chan error, 1)
		go func() { recorded <- c.record(pid) }()
		if opts.OnPid != nil {
			opts.OnPid(pid)
		}
	}
	proc, err = ip.start(ctx)
	if recorded != nil {
		if rerr := <-recorded; err == nil && rerr != nil {
			proc.kill()
			proc = nil
			err = rerr
		}
	}
	if err != nil {
		return nil, err
	}
	c.initConn = proc.conn
	c.Console = proc.console
	return c, nil
}

// prepared is a container made up to the start of its init: its state
// dir with the exec fifo, its cgroup (Create, PrepareCreate).
type prepared struct {
	c                          *Container
	spec                       *specs.Spec
	id, bundle, rootfs, cgPath string
	version                    int
	bs                         bootstrap
	newNS                      map[specs.LinuxNamespaceType]bool
	owned                      []string
}

// prepare checks spec and makes the state dir, the cgroup and the exec
// fifo; on failure nothing is left. With async the cgroup is made beside
// the rest of the create (a pendingCgroup: on v1 it is a directory in
// each of about ten hierarchies, 2-3 ms here), which waits for it before
// the init joins it.
func prepare(ctx context.Context, stateRoot, id string, spec *specs.Spec, bundle string, async bool) (_ *prepared, retErr error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle %q: %w: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	rootfs, err := Validate(spec, bundle)
	if err != nil {
		return nil, err
	}
	cgPath, err := CgroupPath(spec, id)
	if err != nil {
		return nil, err
	}
	warnMissingCaps(ctx, spec.Process.Capabilities)
	if err := os.MkdirAll(stateRoot, 0o711); err != nil {
		return nil, fmt.Errorf("state root %s: %w", stateRoot, err)
	}
	dir := stateDir(stateRoot, id)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("container %q: state dir: %w", id, err)
	}
	p := &prepared{c: &Container{root: stateRoot, dir: dir}, spec: spec, id: id, bundle: bundle, rootfs: rootfs, cgPath: cgPath,
		version: cgroupVersion()}
	defer func() {
		if retErr != nil {
			p.undo()
		}
	}()
	var res *specs.LinuxResources
	if spec.Linux != nil {
		res = withDeviceRules(spec.Linux.Resources, spec.Linux.Devices)
	}
	if async {
		p.c.cg = makeCgroup(p.version, cgPath, res)
	} else if p.c.cg, err = newCgroup(p.version, cgPath, res); err != nil {
		return nil, err
	}
	fifo := filepath.Join(dir, fifoName)
	if err := unix.Mkfifo(fifo, 0o622); err != nil {
		return nil, fmt.Errorf("exec fifo: %w", err)
	}
	// mkfifo honours the umask; the init may write as any user.
	os.Chmod(fifo, 0o622)
	p.bs, p.newNS, p.owned = createBootstrap(spec)
	return p, nil
}

// undo removes what prepare made, killing what runs in the cgroup.
func (p *prepared) undo() {
	if cg := p.c.cg; cg != nil {
		killCgroup(cg)
		for i := 0; i < 50 && cg.Delete() != nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	os.RemoveAll(p.c.dir)
}

// oom is the oom_score_adj of the init, or nil.
func (p *prepared) oom() *int {
	if p.spec.Process == nil {
		return nil
	}
	return p.spec.Process.OOMScoreAdj
}

func (p *prepared) config(opts CreateOpts) *initConfig {
	return createConfig(p.id, p.spec, p.rootfs, p.bundle, p.cgPath, opts, p.newNS)
}

// stored is the state of the container before its init's pid is known.
func (p *prepared) stored(noPivot bool) *stored {
	spec := p.spec
	return &stored{
		State: State{
			OCIVersion: specs.Version, ID: p.id, Status: StatusCreated,
			Bundle: p.bundle, Rootfs: p.rootfs, Annotations: spec.Annotations, Created: time.Now().UTC(),
			CgroupPath: p.cgPath, Owner: "",
		},
		Spec: spec, NoPivot: noPivot, CgroupVersion: p.version, Namespaces: p.owned,
	}
}

// record writes the state of the container whose init is pid, and its
// exec template.
func (c *Container) record(pid int) error {
	start, _, err := procStat(pid)
	if err != nil {
		return fmt.Errorf("init exited during create: %w", errdefs.ErrInternal)
	}
	c.st.Pid, c.st.PidStart = pid, start
	c.st.InitExe, _ = os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err := writeState(c.dir, c.st); err != nil {
		return err
	}
	return writeExecTemplate(c.dir, c.st, c.cg)
}

// createBootstrap is the C stage's bootstrap for a new container: the
// namespaces to create and to join. It also returns the namespaces
// created, as a set and as the names the state records.
func createBootstrap(spec *specs.Spec) (bootstrap, map[specs.LinuxNamespaceType]bool, []string) {
	bs := bootstrap{}
	newNS := map[specs.LinuxNamespaceType]bool{}
	var owned []string
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path == "" {
			bs.cloneFlags |= nsFlags[ns.Type]
			newNS[ns.Type] = true
			owned = append(owned, string(ns.Type))
		} else {
			bs.nsPaths = append(bs.nsPaths, procNSName[ns.Type]+":"+ns.Path)
		}
	}
	bs.userMap = newNS[specs.UserNamespace]
	if newNS[specs.TimeNamespace] && len(spec.Linux.TimeOffsets) > 0 {
		for clock, off := range spec.Linux.TimeOffsets {
			bs.timeOffsets += fmt.Sprintf("%s %d %d\n", clock, off.Secs, off.Nanosecs)
		}
	}
	return bs, newNS, owned
}

// createConfig is the config of a container's Go init.
func createConfig(id string, spec *specs.Spec, rootfs, bundle, cgPath string, opts CreateOpts,
	newNS map[specs.LinuxNamespaceType]bool) *initConfig {
	return &initConfig{
		Mode: modeCreate, ID: id, Spec: spec, Process: spec.Process, Rootfs: rootfs, Bundle: bundle,
		NoPivot: opts.NoPivot, NoNewKeyring: opts.NoNewKeyring, ExtraFiles: len(opts.ExtraFiles),
		NewMountNS: newNS[specs.MountNamespace] || hasNSPath(spec, specs.MountNamespace), NewUTSNS: newNS[specs.UTSNamespace],
		NewCgroupNS: newNS[specs.CgroupNamespace], UserNS: newNS[specs.UserNamespace] || hasNSPath(spec, specs.UserNamespace),
		CgroupPath: cgPath,
	}
}

func hasNSPath(spec *specs.Spec, t specs.LinuxNamespaceType) bool {
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == t && ns.Path != "" {
			return true
		}
	}
	return false
}

// Load opens the container id in stateRoot.
func Load(stateRoot, id string) (*Container, error) {
	st, err := readState(stateRoot, id)
	if err != nil {
		return nil, err
	}
	return &Container{root: stateRoot, dir: stateDir(stateRoot, id), st: st}, nil
}

// List returns the ids of the containers in stateRoot, sorted.
func List(stateRoot string) ([]string, error) {
	ents, err := os.ReadDir(stateRoot)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && ValidateID(e.Name()) == nil {
			if _, err := os.Stat(filepath.Join(stateRoot, e.Name(), stateFile)); err == nil {
				ids = append(ids, e.Name())
			}
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// ID is the container id.
func (c *Container) ID() string { return c.st.ID }

// InitPid is the pid of the container's init as created (also once it
// has exited, unlike State().Pid).
func (c *Container) InitPid() int { return c.st.Pid }

// Spec is the spec the container was created from.
func (c *Container) Spec() *specs.Spec { return c.st.Spec }

func (c *Container) cgroup() (cgroupManager, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cg != nil {
		return c.cg, nil
	}
	cg, err := loadCgroup(c.st.CgroupVersion, c.st.CgroupPath)
	if err != nil {
		return nil, err
	}
	c.cg = cg
	return cg, nil
}

func (c *Container) status() Status {
	if c.st.Stopped || !alive(c.st.Pid, c.st.PidStart) {
		return StatusStopped
	}
	if fifoExists(c.dir) {
		return StatusCreated
	}
	if cg, err := c.cgroup(); err == nil && cg.Frozen() {
		return StatusPaused
	}
	return StatusRunning
}

// State reports the container's state now.
func (c *Container) State() (State, error) {
	s := c.st.State
	s.Status = c.status()
	if s.Status == StatusStopped {
		s.Pid = 0
	}
	return s, nil
}

// Start releases the init of a created container to exec the process.
// In the creating process it also reports an exec failure.
func (c *Container) Start(ctx context.Context) error {
	if st := c.status(); st != StatusCreated {
		return fmt.Errorf("container %q is %s, not created: %w", c.st.ID, st, errdefs.ErrFailedPrecondition)
	}
	fifo := filepath.Join(c.dir, fifoName)
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_CLOEXEC, 0)
		ch <- res{f, err}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var f *os.File
	for f == nil {
		select {
		case r := <-ch:
			if r.err != nil {
				return fmt.Errorf("open exec fifo: %w", r.err)
			}
			f = r.f
		case <-ctx.Done():
			unblockFifo(fifo)
			return ctx.Err()
		case <-tick.C:
			if !alive(c.st.Pid, c.st.PidStart) {
				unblockFifo(fifo)
				return fmt.Errorf("container %q init exited before start: %w", c.st.ID, errdefs.ErrFailedPrecondition)
			}
		}
	}
	b := make([]byte, 1)
	n, err := f.Read(b)
	f.Close()
	if err != nil || n != 1 {
		return fmt.Errorf("container %q: init did not start: %w", c.st.ID, errdefs.ErrFailedPrecondition)
	}
	os.Remove(fifo)
	if c.initConn == nil {
		c.waitExeced()
	}
	if h := c.st.Spec.Hooks; h != nil && len(h.Poststart) > 0 {
		st, _ := c.State()
		if err := RunHooks(ctx, h.Poststart, st, true); err != nil {
			log.G(ctx).WithError(err).WithField(log.FieldContainerID, c.st.ID).Warn("poststart hook failed")
		}
	}
	if c.initConn != nil {
		conn := c.initConn
		c.initConn = nil
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			conn.SetReadDeadline(dl)
		}
		var m initMsg
		if _, err := readFrame(conn, &m); err == nil && m.Type == msgError && m.Error != nil {
			return m.Error.Err()
		}
	}
	return nil
}

// waitExeced waits (bounded) until the init has exec'd the container
// process, so "running" means the user process runs: a freeze or signal
// must not catch the Go init half way through execve.
func (c *Container) waitExeced() {
	path := "/proc/" + strconv.Itoa(c.st.Pid) + "/exe"
	initExe := c.st.InitExe
	if initExe == "" {
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		exe, err := os.Readlink(path)
		if err != nil || exe != initExe {
			return
		}
		if _, st, err := procStat(c.st.Pid); err != nil || st == 'Z' {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func unblockFifo(path string) {
	if fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	}
}

// Signal sends sig to the init, or with all to every process in the
// container's cgroup. A reused pid is never signalled.
func (c *Container) Signal(sig unix.Signal, all bool) error {
	if all {
		cg, err := c.cgroup()
		if err != nil {
			if errdefs.IsNotFound(err) {
				return fmt.Errorf("container %q is not running: %w", c.st.ID, errdefs.ErrFailedPrecondition)
			}
			return err
		}
		pids, err := cg.Pids()
		if err != nil {
			return err
		}
		paused := cg.Frozen()
		for _, p := range pids {
			unix.Kill(p, sig)
		}
		if paused && sig == unix.SIGKILL {
			cg.Thaw()
		}
		return nil
	}
	return signalPid(c.st.Pid, c.st.PidStart, sig, c.st.ID)
}

// signalPid signals pid through a pidfd after checking its start time.
func signalPid(pid int, start uint64, sig unix.Signal, id string) error {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("container %q is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	defer unix.Close(pfd)
	if !alive(pid, start) {
		return fmt.Errorf("container %q is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := unix.PidfdSendSignal(pfd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("container %q is not running: %w", id, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("signal %d: %w", sig, err)
	}
	return nil
}

// Wait waits for the init to exit. Only the parent (the creating process)
// can wait.
func (c *Container) Wait() (ExitStatus, error) { return waitPid(c.st.Pid) }

func waitPid(pid int) (ExitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ExitStatus{}, fmt.Errorf("wait %d: %w: %w", pid, err, errdefs.ErrFailedPrecondition)
		}
		break
	}
	if ws.Signaled() {
		return ExitStatus{Code: 128 + int(ws.Signal()), Signaled: true, Signal: int(ws.Signal())}, nil
	}
	return ExitStatus{Code: ws.ExitStatus()}, nil
}

// Pause freezes every process of the container.
func (c *Container) Pause() error {
	if st := c.status(); st != StatusRunning && st != StatusCreated {
		return fmt.Errorf("container %q is %s: %w", c.st.ID, st, errdefs.ErrFailedPrecondition)
	}
	cg, err := c.cgroup()
	if err != nil {
		return err
	}
	return cg.Freeze()
}

// Resume thaws a paused container.
func (c *Container) Resume() error {
	if st := c.status(); st != StatusPaused {
		return fmt.Errorf("container %q is %s, not paused: %w", c.st.ID, st, errdefs.ErrFailedPrecondition)
	}
	cg, err := c.cgroup()
	if err != nil {
		return err
	}
	return cg.Thaw()
}

// Update changes the resources of a running container.
func (c *Container) Update(r *specs.LinuxResources) error {
	if err := validateResources(r); err != nil {
		return err
	}
	if c.status() == StatusStopped {
		return fmt.Errorf("container %q is stopped: %w", c.st.ID, errdefs.ErrFailedPrecondition)
	}
	if len(r.Devices) > 0 {
		// containerd's runc shim sends the spec's resources whole:
		// the same rules are kept; others cannot be applied to a
		// running container here (runc ignores them).
		var old []specs.LinuxDeviceCgroup
		if c.st.Spec.Linux != nil && c.st.Spec.Linux.Resources != nil {
			old = c.st.Spec.Linux.Resources.Devices
		}
		if !reflect.DeepEqual(r.Devices, old) {
			return fmt.Errorf("container %q: device rules cannot be updated: %w", c.st.ID, errdefs.ErrNotImplemented)
		}
		same := *r
		same.Devices = nil
		r = &same
	}
	cg, err := c.cgroup()
	if err != nil {
		return err
	}
	if err := cg.Update(r); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Spec.Linux == nil {
		c.st.Spec.Linux = &specs.Linux{}
	}
	c.st.Spec.Linux.Resources = mergeResources(c.st.Spec.Linux.Resources, r)
	return writeState(c.dir, c.st)
}

func mergeResources(old, upd *specs.LinuxResources) *specs.LinuxResources {
	if old == nil {
		return upd
	}
	n := *old
	if upd.Memory != nil {
		n.Memory = upd.Memory
	}
	if upd.CPU != nil {
		n.CPU = upd.CPU
	}
	if upd.Pids != nil {
		n.Pids = upd.Pids
	}
	if upd.BlockIO != nil {
		n.BlockIO = upd.BlockIO
	}
	if upd.HugepageLimits != nil {
		n.HugepageLimits = upd.HugepageLimits
	}
	if upd.Unified != nil {
		n.Unified = upd.Unified
	}
	return &n
}

// Stats reads the container's cgroup statistics.
func (c *Container) Stats() (*Stats, error) {
	cg, err := c.cgroup()
	if err != nil {
		return nil, err
	}
	return cg.Stats()
}

// Processes lists the pids in the container's cgroup.
func (c *Container) Processes() ([]int, error) {
	cg, err := c.cgroup()
	if err != nil {
		return nil, err
	}
	pids, err := cg.Pids()
	sort.Ints(pids)
	return pids, err
}

// Delete removes a stopped or created container: every process in its
// cgroup is killed, the cgroup removed and the state dir deleted. A running
// or paused container needs force.
func (c *Container) Delete(ctx context.Context, force bool) error {
	st := c.status()
	if (st == StatusRunning || st == StatusPaused) && !force {
		return fmt.Errorf("container %q is %s; stop it or use force: %w", c.st.ID, st, errdefs.ErrFailedPrecondition)
	}
	if c.initConn != nil {
		c.initConn.Close()
		c.initConn = nil
	}
	if st != StatusStopped {
		_ = signalPid(c.st.Pid, c.st.PidStart, unix.SIGKILL, c.st.ID)
	}
	cg, err := c.cgroup()
	if err == nil {
		// A stopped container whose cgroup is empty needs no kill.
		if pids, perr := cg.Pids(); st != StatusStopped || perr != nil || len(pids) > 0 {
			if err := killCgroup(cg); err != nil {
				return err
			}
		}
		var derr error
		for i := 0; i < 100; i++ {
			if derr = cg.Delete(); derr == nil {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
		if derr != nil {
			return fmt.Errorf("remove cgroup %s: %w", c.st.CgroupPath, derr)
		}
	} else if !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).WithField(log.FieldContainerID, c.st.ID).Warn("load cgroup for delete")
	}
	// The init may be a zombie of a parent that has not reaped it yet:
	// wait until it is no longer running.
	for i := 0; i < 500 && alive(c.st.Pid, c.st.PidStart); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove state: %w", err)
	}
	return nil
}

// reapAll kills and reaps processes this process is the parent of (the
// stage 0 and init of a failed create or exec).
func reapAll(pids []int) {
	for _, p := range pids {
		unix.Kill(p, unix.SIGKILL)
	}
	for _, p := range pids {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(p, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
	}
}
