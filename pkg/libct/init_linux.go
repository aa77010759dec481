package libct

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct/nsenter"
	"golang.org/x/sys/unix"
)

// initConfig is what the parent sends the Go init after the C stage.
type initConfig struct {
	Mode         string              `json:"mode"` // modeCreate or modeExec
	ID           string              `json:"id"`
	Spec         *specs.Spec         `json:"spec,omitempty"`
	Process      *specs.Process      `json:"process,omitempty"`
	Rootfs       string              `json:"rootfs,omitempty"`
	Bundle       string              `json:"bundle,omitempty"`
	NoPivot      bool                `json:"noPivot,omitempty"`
	NoNewKeyring bool                `json:"noNewKeyring,omitempty"`
	ExtraFiles   int                 `json:"extraFiles"`
	NewMountNS   bool                `json:"newMountNS"`
	NewUTSNS     bool                `json:"newUTSNS"`
	NewCgroupNS  bool                `json:"newCgroupNS"`
	UserNS       bool                `json:"userNS"`
	Seccomp      *specs.LinuxSeccomp `json:"seccomp,omitempty"`
	CgroupPath   string              `json:"cgroupPath,omitempty"`
	InitPid      int                 `json:"initPid,omitempty"`
	// MountFds maps each spec mount to the index of the detached tree
	// the parent prepared for it among the files sent with this config
	// (-1: the init mounts it itself).
	MountFds []int `json:"mountFds,omitempty"`

	conn       frameConn
	mountFiles []*os.File
	// cgroupMade, when set, waits until the container's cgroup exists
	// (Create makes it beside the rest): the C init's plan binds its
	// directories only once they are there.
	cgroupMade func()
}

// preparedMount returns (and hands over) the detached tree the parent
// made for spec mount i, or nil.
func (cfg *initConfig) preparedMount(i int) *os.File {
	if i >= len(cfg.MountFds) || cfg.MountFds[i] < 0 || cfg.MountFds[i] >= len(cfg.mountFiles) {
		return nil
	}
	f := cfg.mountFiles[cfg.MountFds[i]]
	cfg.mountFiles[cfg.MountFds[i]] = nil
	return f
}

// hookState is the state the init gives createContainer and
// startContainer hooks.
func (cfg *initConfig) hookState(status Status) State {
	return State{OCIVersion: specs.Version, ID: cfg.ID, Status: status, Pid: cfg.InitPid, Bundle: cfg.Bundle,
		Annotations: cfg.Spec.Annotations}
}

// IsInit reports whether this process was started by libct as a container
// init or exec process (it should call Init right away).
func IsInit() bool { return nsenter.InInit() }

// Init is the Go half of the container init and of exec'd processes. The
// binary's "init" command calls it; it never returns. On success it execs
// the container process; on failure it reports a typed error to the parent
// and exits 1.
func Init() {
	// Capabilities, credentials, no_new_privs and seccomp are per thread:
	// do all of it, and the final execve, on this one thread.
	runtime.LockOSThread()
	runtime.GOMAXPROCS(1)
	// Short-lived and small: no garbage collection.
	debug.SetGCPercent(-1)
	fd, err := strconv.Atoi(os.Getenv(envInitPipe))
	if err != nil || !nsenter.InInit() {
		fmt.Fprintln(os.Stderr, "shim init: not started by libct (no init pipe)")
		os.Exit(1)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, false); err != nil {
		fmt.Fprintln(os.Stderr, "shim init: init pipe:", err)
		os.Exit(1)
	}
	conn := initEnd(fd)
	fifoFd := -1
	if s := os.Getenv(envFifoFd); s != "" {
		fifoFd, _ = strconv.Atoi(s)
		unix.CloseOnExec(fifoFd)
	}
	for _, k := range []string{envInitPipe, envFifoFd, envStage, envLogLevel} {
		os.Unsetenv(k)
	}
	err = initMain(conn, fifoFd)
	// initMain only returns on failure.
	if err == nil {
		err = errors.New("init returned without exec")
	}
	w := errdefs.ToWire(err)
	if writeFrame(conn, initMsg{Type: msgError, Error: &w}) != nil {
		fmt.Fprintln(os.Stderr, "shim init:", err)
	}
	os.Exit(1)
}

// initMain reads the init config and hands over to the init of its mode.
func initMain(conn frameConn, fifoFd int) error {
	cfg, err := readInitConfig(conn)
	if err != nil {
		return err
	}
	switch cfg.Mode {
	case modeCreate:
		return (&standardInit{cfg: cfg, fifoFd: fifoFd, procFdDir: -1}).run()
	case modeExec:
		return (&setnsInit{cfg: cfg}).run()
	}
	return fmt.Errorf("init config: unknown mode %q: %w", cfg.Mode, errdefs.ErrInternal)
}

// initSpec is the part of the runtime spec the Go init reads: initConfig's
// "spec" as the init decodes it. encoding/json builds the codecs of every
// type a struct reaches when it first meets the struct, and the init is a
// fresh process each time: decoding the whole specs.Spec cost each
// container start about 1.5 ms more. A field of the spec the init starts
// to read is added here too (TestInitConfigWire lists them).
type initSpec struct {
	Root        *specs.Root       `json:"root,omitempty"`
	Mounts      []specs.Mount     `json:"mounts,omitempty"`
	Hooks       *specs.Hooks      `json:"hooks,omitempty"`
	Hostname    string            `json:"hostname,omitempty"`
	Domainname  string            `json:"domainname,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Linux       *struct {
		Devices           []specs.LinuxDevice `json:"devices,omitempty"`
		Sysctl            map[string]string   `json:"sysctl,omitempty"`
		Seccomp           *specs.LinuxSeccomp `json:"seccomp,omitempty"`
		RootfsPropagation string              `json:"rootfsPropagation,omitempty"`
		MaskedPaths       []string            `json:"maskedPaths,omitempty"`
		ReadonlyPaths     []string            `json:"readonlyPaths,omitempty"`
		MountLabel        string              `json:"mountLabel,omitempty"`
	} `json:"linux,omitempty"`
}

// spec is the runtime spec with only what the init reads.
func (s *initSpec) spec() *specs.Spec {
	if s == nil {
		return nil
	}
	out := &specs.Spec{Root: s.Root, Mounts: s.Mounts, Hooks: s.Hooks, Hostname: s.Hostname,
		Domainname: s.Domainname, Annotations: s.Annotations}
	if l := s.Linux; l != nil {
		out.Linux = &specs.Linux{Devices: l.Devices, Sysctl: l.Sysctl, Seccomp: l.Seccomp,
			RootfsPropagation: l.RootfsPropagation, MaskedPaths: l.MaskedPaths,
			ReadonlyPaths: l.ReadonlyPaths, MountLabel: l.MountLabel}
	}
	return out
}

// readInitConfig reads the config the parent sends after the C stage, with
// the detached mount trees it prepared.
func readInitConfig(conn frameConn) (*initConfig, error) {
	var in struct {
		initConfig
		Spec *initSpec `json:"spec,omitempty"` // hides initConfig.Spec
	}
	files, err := readFrame(conn, &in)
	cfg := in.initConfig
	cfg.Spec = in.Spec.spec()
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		// The monitor puts the process in as the daemon sent it.
		return nil, fmt.Errorf("init config: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, fmt.Errorf("read init config: %w: %w", err, errdefs.ErrInternal)
	}
	want := 0
	for _, i := range cfg.MountFds {
		if i >= 0 {
			want++
		}
	}
	if len(files) != want {
		return nil, fmt.Errorf("init config: %d mount fds, want %d: %w", len(files), want, errdefs.ErrInternal)
	}
	cfg.mountFiles = files
	if cfg.Process == nil {
		return nil, fmt.Errorf("no process in init config: %w", errdefs.ErrInvalidArgument)
	}
	cfg.conn = conn
	return &cfg, nil
}

// execPlan is the container process made ready to exec, once its mode's
// init has set up its root and namespaces. What is left (execPlan.exec)
// happens after "ready" and allocates nothing.
type execPlan struct {
	p      *specs.Process
	late   []rlimitOp   // rlimits set last (address space, data)
	filter *seccompProg // loaded last, when no_new_privs allows it
	ex     *preparedExec
}

// planExec does what both modes do before "ready": rlimits, the binary
// looked up, LSM labels, fds closed, the seccomp filter compiled (and
// loaded while the capabilities last, without no_new_privs), the user and
// capabilities switched.
func planExec(cfg *initConfig, seccompSpec *specs.LinuxSeccomp) (*execPlan, error) {
	p := cfg.Process
	early, late, err := planRlimits(p.Rlimits)
	if err != nil {
		return nil, err
	}
	if err := setRlimits(early); err != nil {
		return nil, err
	}
	env := p.Env
	if !hasEnv(env, "HOME") {
		env = append(env, "HOME="+homeDir(p.User.UID))
	}
	argv0, err := lookPath(p.Args, env)
	if err != nil {
		return nil, err
	}
	// Before the capabilities go and before any seccomp filter: the
	// profile and label take effect at the execve, on this (locked)
	// thread.
	if err := hostLSM.applyExecLSM(p); err != nil {
		return nil, err
	}
	// Before any seccomp filter: close_range may not be allowed by it.
	if err := closeExtraFds(3 + cfg.ExtraFiles); err != nil {
		return nil, err
	}
	plan := &execPlan{p: p, late: late}
	if seccompSpec != nil {
		if plan.filter, err = compileSeccomp(seccompSpec); err != nil {
			return nil, err
		}
		if !p.NoNewPrivileges {
			// Without no_new_privs loading a filter needs
			// CAP_SYS_ADMIN: do it before the capabilities go.
			if err := plan.filter.load(); err != nil {
				return nil, err
			}
		}
	}
	if err := finalizeProcess(cfg); err != nil {
		return nil, err
	}
	if plan.ex, err = prepareExec(argv0, p.Args, env); err != nil {
		return nil, err
	}
	return plan, nil
}

// reportReady tells the parent the init is ready to exec.
func reportReady(conn frameConn) error {
	if err := writeFrame(conn, initMsg{Type: msgReady}); err != nil {
		return fmt.Errorf("report ready: %w", err)
	}
	return nil
}

// exec sets no_new_privs, the last rlimits and the seccomp filter, and
// execs the container process. It returns only on failure.
func (pl *execPlan) exec() error {
	// From here on nothing allocates: the address-space limits may be
	// in force.
	p := pl.p
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	if e := setRlimitsRaw(pl.late); e != 0 {
		return fmt.Errorf("set rlimits: %w: %w", e, errdefs.ErrInvalidArgument)
	}
	if pl.filter != nil && p.NoNewPrivileges {
		if err := pl.filter.load(); err != nil {
			return err
		}
	}
	e := pl.ex.exec()
	// Any failure of execve itself means the container cannot start.
	return fmt.Errorf("exec %s: %w: %w", p.Args[0], e, errdefs.OSClass(e, errdefs.ErrFailedPrecondition))
}

// preparedExec holds execve's arguments as C strings, built before the
// rlimits and seccomp filter are in force.
type preparedExec struct {
	path *byte
	argv []*byte
	envv []*byte
}

func prepareExec(path string, args, env []string) (*preparedExec, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return nil, fmt.Errorf("exec path %q: %w", path, errdefs.ErrInvalidArgument)
	}
	argv, err := cStrings(args)
	if err != nil {
		return nil, fmt.Errorf("process args contain NUL: %w", errdefs.ErrInvalidArgument)
	}
	envv, err := cStrings(env)
	if err != nil {
		return nil, fmt.Errorf("process env contains NUL: %w", errdefs.ErrInvalidArgument)
	}
	return &preparedExec{path: p, argv: argv, envv: envv}, nil
}

// cStrings is a NULL-terminated array of C strings.
func cStrings(ss []string) ([]*byte, error) {
	out := make([]*byte, len(ss)+1)
	for i, s := range ss {
		p, err := unix.BytePtrFromString(s)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func (e *preparedExec) exec() error {
	_, _, errno := unix.RawSyscall(unix.SYS_EXECVE, uintptr(unsafePointer(e.path)),
		uintptr(unsafePointer(&e.argv[0])), uintptr(unsafePointer(&e.envv[0])))
	return errno
}

func hasEnv(env []string, k string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, k+"=") {
			return true
		}
	}
	return false
}

// lookPath finds args[0] in the container's PATH, so a missing binary is a
// typed error at create time rather than a failure after start.
func lookPath(args, env []string) (string, error) {
	if len(args) == 0 || args[0] == "" {
		return "", fmt.Errorf("process args are empty: %w", errdefs.ErrInvalidArgument)
	}
	name := args[0]
	check := func(p string) error {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return unix.EISDIR
		}
		if st.Mode&0o111 == 0 {
			return unix.EACCES
		}
		return nil
	}
	if strings.Contains(name, "/") {
		if err := check(name); err != nil {
			return "", fmt.Errorf("exec %q: %w: %w", name, err, errdefs.ErrNotFound)
		}
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		if check(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %q: executable file not found in $PATH: %w", name, errdefs.ErrNotFound)
}

// homeDir looks uid up in the container's /etc/passwd (capped read).
func homeDir(uid uint32) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/"
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	n, _ := f.Read(buf)
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		parts := strings.Split(line, ":")
		if len(parts) >= 6 && parts[2] == strconv.FormatUint(uint64(uid), 10) && parts[5] != "" {
			return parts[5]
		}
	}
	return "/"
}

// closeExtraFds marks every fd >= from close-on-exec, so nothing but stdio
// and the preserved fds reaches the container process.
func closeExtraFds(from int) error {
	// close_range(2) with CLOSE_RANGE_CLOEXEC needs no /proc (Linux 5.11).
	if err := unix.CloseRange(uint(from), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < from {
			continue
		}
		unix.CloseOnExec(fd)
	}
	return nil
}

// setupConsole makes a pty in the container's /dev/pts, sends the master to
// the parent and makes the slave the controlling terminal and stdio.
func setupConsole(conn frameConn) error {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.Itoa(int(n))
	slave, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	if err := writeFrame(conn, initMsg{Type: "console", Name: name}, master); err != nil {
		return fmt.Errorf("send console: %w", err)
	}
	unix.Close(master)
	for i := 0; i < 3; i++ {
		if err := unix.Dup3(slave, i, 0); err != nil {
			return fmt.Errorf("dup pty: %w", err)
		}
	}
	if slave > 2 {
		unix.Close(slave)
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("set controlling tty: %w", err)
	}
	return nil
}
