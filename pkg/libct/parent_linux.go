package libct

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

// The parent's side of starting a process in a container. A sealed copy of
// this binary runs as stage 0; the C stage (pkg/libct/nsenter) creates or
// joins the namespaces and reports the pid of the Go init (Init), which
// receives its config and answers "ready" or a typed error. Both modes
// share that start (launch); after it a container's init (initProcess:
// create, run) and a process exec'd into a running container
// (setnsProcess) go their own ways, as do their child sides
// (standardInit, setnsInit).

// Init modes, as the init config carries them.
const (
	modeCreate = "create"
	modeExec   = "exec"
)

type stdio struct{ in, out, err *os.File }

// childFiles are the files stage 0 starts with after stdio.
type childFiles struct {
	extra    []*os.File // the container process's preserved fds: 3, 4, ...
	initPipe *os.File   // the child's end of the init pipe
	fifo     *os.File   // the exec fifo (container init only), or nil
	exe      *os.File   // the sealed binary stage 0 is executed from
}

// childFds are the fd numbers the files of childFiles have in the child
// (-1: not passed).
type childFds struct{ initPipe, fifo, exe int }

// layout orders the files for exec.Cmd.ExtraFiles (whose file i is the
// child's fd 3+i) and says where each landed. The preserved fds come first,
// so they keep their numbers in the container process.
func (f childFiles) layout() ([]*os.File, childFds) {
	files := append([]*os.File(nil), f.extra...)
	add := func(x *os.File) int {
		if x == nil {
			return -1
		}
		files = append(files, x)
		return 3 + len(files) - 1
	}
	fds := childFds{initPipe: add(f.initPipe)}
	fds.fifo = add(f.fifo)
	fds.exe = add(f.exe)
	return files, fds
}

// env tells the Go init where its init pipe and exec fifo are.
func (d childFds) env() []string {
	env := []string{envInitPipe + "=" + strconv.Itoa(d.initPipe)}
	if d.fifo >= 0 {
		env = append(env, envFifoFd+"="+strconv.Itoa(d.fifo))
	}
	return env
}

// launch is the start both modes share: stage 0 run from the sealed
// binary, the C stage bootstrapped, the init's pid learned.
type launch struct {
	bs     bootstrap
	extra  []*os.File // preserved fds
	fifo   *os.File   // exec fifo, or nil
	stdio  stdio
	oom    *int          // oom_score_adj of stage 0 (inherited by the init), or nil
	cg     cgroupManager // the cgroup stage 0 joins before the C stage runs, or nil
	idMaps *specs.Linux  // uid and gid mappings, written when the C stage asks
	// onPid, if set, is called with the init's pid as soon as it is
	// known, before the exchange with the init (which it runs beside).
	onPid func(pid int)
}

// started is a Go init this process started and is the parent of.
type started struct {
	pid     int
	conn    *net.UnixConn // the parent's end of the init pipe
	console *os.File      // the pty master, when kept by the parent
}

// kill kills and reaps the init and closes what the parent holds of it.
func (s *started) kill() {
	reapAll([]int{s.pid})
	s.conn.Close()
	if s.console != nil {
		s.console.Close()
	}
}

// cancelOn makes blocked reads and writes on the init pipe fail once ctx
// is done.
func (s *started) cancelOn(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Now()) })
}

// start runs stage 0 and returns the init the C stage forked, stage 0
// reaped. On failure nothing it started is left running.
func (l *launch) start(ctx context.Context) (_ *started, retErr error) {
	exe, err := sealedExe()
	if err != nil {
		return nil, err
	}
	conn, child, err := initPipe()
	if err != nil {
		return nil, err
	}
	defer child.Close()
	defer func() {
		if retErr != nil {
			conn.Close()
		}
	}()
	files, fds := childFiles{extra: l.extra, initPipe: child, fifo: l.fifo, exe: exe}.layout()
	cmd := &exec.Cmd{
		Path:       "/proc/self/fd/" + strconv.Itoa(fds.exe),
		Args:       []string{"shim", "init"},
		Env:        fds.env(),
		ExtraFiles: files,
	}
	// Assign only non-nil files: a nil *os.File in the io interfaces
	// would not be replaced by /dev/null.
	if l.stdio.in != nil {
		cmd.Stdin = l.stdio.in
	}
	if l.stdio.out != nil {
		cmd.Stdout = l.stdio.out
	}
	if l.stdio.err != nil {
		cmd.Stderr = l.stdio.err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start init: %w", err)
	}
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	child.Close()
	s := &started{conn: conn}
	stop := s.cancelOn(ctx)
	defer stop()
	if s.pid, err = l.bootstrap(ctx, conn, cmd.Process.Pid); err != nil {
		return nil, err
	}
	cmd.Wait()
	reaped = true
	return s, nil
}

// initPipe is a connected socket pair: the parent's end, and the child's
// to pass to stage 0.
func initPipe() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	parentFile := os.NewFile(uintptr(fds[0]), "initpipe-parent")
	childFile := os.NewFile(uintptr(fds[1]), "initpipe-child")
	fc, err := net.FileConn(parentFile)
	parentFile.Close()
	if err != nil {
		childFile.Close()
		return nil, nil, err
	}
	return fc.(*net.UnixConn), childFile, nil
}

// bootstrap puts stage 0 in place (oom_score_adj, cgroup), sends the C
// stage its bootstrap, answers its requests and returns the init's pid.
func (l *launch) bootstrap(ctx context.Context, conn *net.UnixConn, stage0 int) (int, error) {
	if l.oom != nil {
		if err := writeOOMScoreAdj(strconv.Itoa(stage0), *l.oom); err != nil {
			return 0, err
		}
	}
	if l.cg != nil {
		if p, ok := l.cg.(*pendingCgroup); ok {
			// Made beside the init's start (Create): its error is
			// the create's, with its own class.
			if err := p.wait(); err != nil {
				return 0, err
			}
		}
		if err := l.cg.Add(stage0); err != nil {
			return 0, fmt.Errorf("add init to cgroup: %w: %w", err, errdefs.ErrInternal)
		}
	}
	if _, err := conn.Write(l.bs.encode()); err != nil {
		return 0, fmt.Errorf("send bootstrap: %w", ctxErr(ctx, err))
	}
	for {
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return 0, fmt.Errorf("nsexec: %w", ctxErr(ctx, err))
		}
		switch b[0] {
		case syncUserMap:
			if err := writeIDMaps(stage0, l.idMaps); err != nil {
				return 0, err
			}
			if _, err := conn.Write([]byte{syncUserMapAck}); err != nil {
				return 0, err
			}
		case syncPid:
			var p [4]byte
			if _, err := io.ReadFull(conn, p[:]); err != nil {
				return 0, fmt.Errorf("nsexec: %w", ctxErr(ctx, err))
			}
			if pid := int(int32(uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24)); pid != 0 {
				return pid, nil
			}
		case syncErr:
			return 0, stageErr(conn)
		default:
			return 0, fmt.Errorf("nsexec: unexpected sync byte %#x: %w", b[0], errdefs.ErrInternal)
		}
	}
}

// awaitReady serves the Go init until it reports "ready": a pty master goes
// to consoleSock (or is kept in s.console), a "hooks" message runs onHooks
// (nil: the mode has none).
func (s *started) awaitReady(ctx context.Context, consoleSock *os.File, onHooks func() error) error {
	for {
		var m initMsg
		files, err := readFrame(s.conn, &m)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("container init exited before it was ready: %w", errdefs.ErrInternal)
			}
			return fmt.Errorf("container init: %w", ctxErr(ctx, err))
		}
		switch {
		case m.Type == "console":
			if len(files) != 1 {
				return fmt.Errorf("console message without a pty: %w", errdefs.ErrInternal)
			}
			if consoleSock == nil {
				s.console = files[0]
				continue
			}
			err := sendConsole(consoleSock, m.Name, files[0])
			files[0].Close()
			if err != nil {
				return err
			}
		case m.Type == msgReady:
			return nil
		case m.Type == "hooks" && onHooks != nil:
			if err := onHooks(); err != nil {
				return err
			}
			if err := writeFrame(s.conn, initMsg{Type: "hooks-done"}); err != nil {
				return err
			}
		case m.Type == msgError:
			if m.Error == nil {
				return fmt.Errorf("container init failed: %w", errdefs.ErrInternal)
			}
			return m.Error.Err()
		default:
			return fmt.Errorf("container init: unexpected message %q: %w", m.Type, errdefs.ErrInternal)
		}
	}
}

// initProcess starts a container's init (create, run): new namespaces,
// the mounts the parent prepares, the createRuntime hooks, the exec fifo.
type initProcess struct {
	launch
	cfg         *initConfig
	plan        []byte // the C init's plan (the bootstrap says so), or nil
	consoleSock *os.File
}

func (p *initProcess) start(ctx context.Context) (*started, error) {
	return p.launch.run(ctx, func(s *started) error {
		if p.plan != nil {
			if err := writePlan(s.conn, p.plan); err != nil {
				return fmt.Errorf("send init plan: %w", ctxErr(ctx, err))
			}
			return s.awaitReady(ctx, nil, nil)
		}
		cfg := p.cfg
		cfg.InitPid = s.pid
		plan, err := prepareMounts(ctx, cfg.Spec, cfg.Bundle, s.pid, cfg.UserNS)
		if err != nil {
			return err
		}
		defer plan.close()
		cfg.MountFds = plan.index
		var mountFds []int
		for _, f := range plan.files {
			mountFds = append(mountFds, int(f.Fd()))
		}
		if err := writeFrame(s.conn, cfg, mountFds...); err != nil {
			return fmt.Errorf("send init config: %w", ctxErr(ctx, err))
		}
		return s.awaitReady(ctx, p.consoleSock, p.runtimeHooks(ctx, s.pid))
	})
}

// runtimeHooks runs the prestart and createRuntime hooks when the init
// asks, in the runtime's namespaces.
func (p *initProcess) runtimeHooks(ctx context.Context, pid int) func() error {
	return func() error {
		h := p.cfg.Spec.Hooks
		st := State{OCIVersion: specs.Version, ID: p.cfg.ID, Status: StatusCreating, Pid: pid,
			Bundle: p.cfg.Bundle, Annotations: p.cfg.Spec.Annotations}
		if err := RunHooks(ctx, h.Prestart, st, false); err != nil { //nolint:staticcheck // deprecated, still supported
			return err
		}
		return RunHooks(ctx, h.CreateRuntime, st, false)
	}
}

// setnsProcess starts a process in a running container: it joins the
// container's namespaces and cgroup; there are no mounts and no hooks.
type setnsProcess struct {
	launch
	cfg         *initConfig
	consoleSock *os.File
}

func (p *setnsProcess) start(ctx context.Context) (*started, error) {
	return p.launch.run(ctx, func(s *started) error {
		if err := writeFrame(s.conn, p.cfg); err != nil {
			return fmt.Errorf("send init config: %w", ctxErr(ctx, err))
		}
		return s.awaitReady(ctx, p.consoleSock, nil)
	})
}

// run starts the process and has the mode's exchange with it (cancelled
// with ctx); the process is killed when the exchange fails.
func (l *launch) run(ctx context.Context, exchange func(*started) error) (*started, error) {
	s, err := l.start(ctx)
	if err != nil {
		return nil, err
	}
	if l.onPid != nil {
		l.onPid(s.pid)
	}
	stop := s.cancelOn(ctx)
	defer stop()
	if err := exchange(s); err != nil {
		s.kill()
		return nil, err
	}
	return s, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func sendConsole(sock *os.File, name string, master *os.File) error {
	rights := unix.UnixRights(int(master.Fd()))
	if err := unix.Sendmsg(int(sock.Fd()), []byte(name), rights, nil, 0); err != nil {
		return fmt.Errorf("send pty master to console socket: %w", err)
	}
	return nil
}

func writeIDMaps(pid int, lx *specs.Linux) error {
	fmtMap := func(ms []specs.LinuxIDMapping) []byte {
		var b []byte
		for _, m := range ms {
			b = append(b, fmt.Sprintf("%d %d %d\n", m.ContainerID, m.HostID, m.Size)...)
		}
		return b
	}
	base := "/proc/" + strconv.Itoa(pid) + "/"
	if err := os.WriteFile(base+"uid_map", fmtMap(lx.UIDMappings), 0); err != nil {
		return fmt.Errorf("write uid_map: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := os.WriteFile(base+"gid_map", fmtMap(lx.GIDMappings), 0); err != nil {
		return fmt.Errorf("write gid_map: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return nil
}
