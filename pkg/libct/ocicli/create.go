package ocicli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/libct/specjson"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

var createFlags = []cmdline.Flag{
	{Name: "bundle", Aliases: []string{"b"}, Usage: "bundle directory (default: cwd)"},
	{Name: "console-socket", Usage: "unix socket that receives the pty master"},
	{Name: "pid-file", Usage: "file to write the init pid to"},
	{Name: "no-pivot", Kind: cmdline.Bool, Usage: "use MS_MOVE and chroot instead of pivot_root"},
	{Name: "no-new-keyring", Kind: cmdline.Bool, Usage: "keep the caller's session keyring"},
	{Name: "preserve-fds", Kind: cmdline.Int64, Usage: "pass this many fds after stdio to the container"},
}

var ociCreate = &cmdline.Command{
	Name: "create", Usage: "create a container", ArgsUsage: "<id>", Flags: createFlags,
	Action: func(c *cmdline.Context) error {
		_, err := doCreate(c, nil)
		return ociFail(err)
	},
}

func readSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w: %w", err, errdefs.ErrNotFound)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	var spec specs.Spec
	if err := specjson.Decode(b, &spec); err != nil {
		return nil, fmt.Errorf("parse config.json: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return &spec, nil
}

func dialConsole(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect console socket %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return os.NewFile(uintptr(fd), path), nil
}

func writePidFile(path string, pid int) error {
	if path == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	return os.Rename(tmp, abs)
}

// doCreate creates the container of the command line; onPid, if set, is
// CreateOpts.OnPid.
func doCreate(c *cmdline.Context, onPid func(int)) (*libct.Container, error) {
	id, err := needID(c)
	if err != nil {
		return nil, err
	}
	bundle := c.String("bundle")
	if bundle == "" {
		if bundle, err = os.Getwd(); err != nil {
			return nil, err
		}
	}
	spec, err := readSpec(bundle)
	if err != nil {
		return nil, err
	}
	opts := libct.CreateOpts{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		NoPivot: c.Bool("no-pivot"), NoNewKeyring: c.Bool("no-new-keyring"), OnPid: onPid,
	}
	for i := int64(0); i < c.Int64("preserve-fds"); i++ {
		opts.ExtraFiles = append(opts.ExtraFiles, os.NewFile(uintptr(3+i), "preserved"))
	}
	if p := c.String("console-socket"); p != "" {
		if spec.Process == nil || !spec.Process.Terminal {
			return nil, fmt.Errorf("--console-socket given but process.terminal is false: %w", errdefs.ErrInvalidArgument)
		}
		if opts.ConsoleSocket, err = dialConsole(p); err != nil {
			return nil, err
		}
		defer opts.ConsoleSocket.Close()
	} else if spec.Process != nil && spec.Process.Terminal && c.Command.Name == "create" {
		return nil, fmt.Errorf("process.terminal is true: --console-socket is required: %w", errdefs.ErrInvalidArgument)
	}
	ctx := log.WithFields(context.Background(), logrus.Fields{log.FieldContainerID: id})
	useEmbeddedInit(rootOf(c))
	ct, err := libct.Create(ctx, rootOf(c), id, spec, bundle, opts)
	if err != nil {
		return nil, err
	}
	st, _ := ct.State()
	if err := writePidFile(c.String("pid-file"), st.Pid); err != nil {
		ct.Delete(ctx, true)
		return nil, err
	}
	return ct, nil
}

var ociStart = &cmdline.Command{
	Name: "start", Usage: "start a created container", ArgsUsage: "<id>",
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Start(context.Background()))
	},
}

var ociRun = &cmdline.Command{
	Name: "run", Usage: "create and start a container", ArgsUsage: "<id>",
	Flags: append(append([]cmdline.Flag(nil), createFlags...),
		cmdline.Flag{Name: "detach", Aliases: []string{"d"}, Kind: cmdline.Bool, Usage: "do not wait for the container"},
		cmdline.Flag{Name: "keep", Kind: cmdline.Bool, Usage: "do not delete the container after it exits"},
	),
	Action: func(c *cmdline.Context) error {
		ctx := context.Background()
		if !c.Bool("detach") {
			// Become the subreaper so the init (and anything it
			// leaves behind) is reaped here.
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
		}
		var sigs *signalForwarder
		var onPid func(int)
		if !c.Bool("detach") {
			sigs = forwardSignals()
			onPid = func(int) { sigs.installRest() }
		}
		ct, err := doCreate(c, onPid)
		if err != nil {
			return ociFail(err)
		}
		sigs.wait()
		if err := ct.Start(ctx); err != nil {
			ct.Delete(ctx, true)
			return ociFail(err)
		}
		if c.Bool("detach") {
			return nil
		}
		code := attachAndWait(ct, ct.InitPid(), ct.Console, sigs)
		if !c.Bool("keep") {
			ct.Delete(ctx, true)
		}
		if code != 0 {
			return cmdline.Exit("", code)
		}
		return nil
	},
}

// signalForwarder holds the signals run and exec forward to the
// container's process (forwardAndWait).
type signalForwarder struct {
	sigs      chan os.Signal
	installed chan struct{} // closed once every signal is held
	once      sync.Once
}

// forwardSignals holds the signals that end a process (^C, SIGTERM,
// SIGHUP, SIGQUIT) from now on: run and exec call it before they create
// anything, so one during the create is forwarded once the process runs,
// instead of ending this process and leaving a created container behind,
// as runc does. The other signals are held by installRest, which runs
// beside the create: installing a handler is one hand-off to the Go
// runtime's signal thread per signal (about 2 ms for all of them here).
func forwardSignals() *signalForwarder {
	f := &signalForwarder{sigs: make(chan os.Signal, 32), installed: make(chan struct{})}
	signal.Notify(f.sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	return f
}

// installRest holds every other signal, in the background; wait waits
// for it.
func (f *signalForwarder) installRest() {
	f.once.Do(func() {
		go func() {
			signal.Notify(f.sigs)
			close(f.installed)
		}()
	})
}

// wait begins installRest if nothing has, and waits until every signal is
// held; a nil forwarder (detached) has nothing to wait for.
func (f *signalForwarder) wait() {
	if f == nil {
		return
	}
	f.installRest()
	<-f.installed
}

// forwardAndWait forwards signals to pid and reaps children until pid
// exits; it returns the exit code (128+signal for a signal death).
func forwardAndWait(ct *libct.Container, pid int, f *signalForwarder) int {
	f.wait()
	sigs := f.sigs
	done := make(chan int, 1)
	go func() {
		for {
			var ws unix.WaitStatus
			p, err := unix.Wait4(-1, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				logrus.WithError(err).WithField("pid", pid).Error("wait for the container process")
				done <- 255
				return
			}
			if p == pid {
				if ws.Signaled() {
					done <- 128 + int(ws.Signal())
				} else {
					done <- ws.ExitStatus()
				}
				return
			}
		}
	}()
	for {
		select {
		case code := <-done:
			return code
		case s := <-sigs:
			sig := s.(unix.Signal)
			if sig == unix.SIGCHLD || sig == unix.SIGURG || sig == unix.SIGPIPE || sig == unix.SIGWINCH {
				continue
			}
			unix.Kill(pid, sig)
		}
	}
}
