// Package ocicli is `shim oci`, the runc-compatible OCI runtime CLI over
// pkg/libct, and `shim init`, the container init libct re-executes. The
// shim binary registers both (cmd/shim); tests build a minimal binary
// with them (test/oci/shimbin).
package ocicli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// Command returns the "oci" command.
func Command() *cli.Command { return ociCommand }

// InitCommand returns the hidden "init" command: pkg/libct re-executes a
// sealed copy of the binary as "<binary> init" after the C stage in
// pkg/libct/nsenter has set up the namespaces. It never returns on success.
func InitCommand() *cli.Command { return initCommand }

var initCommand = &cli.Command{
	Name:   "init",
	Hidden: true,
	Usage:  "internal: container init (started by pkg/libct)",
	Action: func(c *cli.Context) error {
		libct.Init()
		return nil
	},
}

// ociCommand is the runc-compatible OCI runtime CLI over pkg/libct.
var ociCommand = &cli.Command{
	Name:  "oci",
	Usage: "runc-compatible OCI runtime CLI",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "root", Value: "/run/shim/oci", Usage: "state directory"},
		&cli.StringFlag{Name: "log", Usage: "log file (default stderr)"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"},
		&cli.BoolFlag{Name: "systemd-cgroup", Usage: "use systemd cgroups (not supported)"},
		&cli.BoolFlag{Name: "debug"},
		&cli.StringFlag{Name: "criu", Hidden: true},
		&cli.StringFlag{Name: "rootless", Hidden: true},
	},
	Before: ociBefore,
	Subcommands: []*cli.Command{
		ociCreate, ociStart, ociRun, ociState, ociKill, ociDelete, ociExec, ociList,
		ociPause, ociResume, ociUpdate, ociEvents, ociPs, ociFeatures,
	},
}

func ociBefore(c *cli.Context) error {
	logrus.SetOutput(os.Stderr)
	if c.Bool("debug") {
		logrus.SetLevel(logrus.DebugLevel)
	}
	if p := c.String("log"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return cli.Exit(fmt.Sprintf("open log %s: %v", p, err), 1)
		}
		logrus.SetOutput(f)
	}
	switch c.String("log-format") {
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{})
	case "text", "":
	default:
		return cli.Exit("unknown --log-format "+c.String("log-format"), 1)
	}
	if c.Bool("systemd-cgroup") {
		return ociFail(fmt.Errorf("--systemd-cgroup: systemd cgroups are not supported; use cgroupfs paths: %w", errdefs.ErrNotImplemented))
	}
	return nil
}

// ociFail logs err (so a caller reading --log sees it, as with runc) and
// returns it as exit status 1.
func ociFail(err error) error {
	if err == nil {
		return nil
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return err
	}
	logrus.WithField("class", errdefs.Class(err)).Error(err.Error())
	if logrus.StandardLogger().Out != os.Stderr {
		fmt.Fprintln(os.Stderr, "shim oci:", err)
	}
	return cli.Exit("", 1)
}

func needID(c *cli.Context) (string, error) {
	id := c.Args().First()
	if id == "" {
		return "", fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	return id, nil
}

func loadContainer(c *cli.Context) (*libct.Container, error) {
	id, err := needID(c)
	if err != nil {
		return nil, err
	}
	ct, err := libct.Load(rootOf(c), id)
	if err != nil && errdefs.IsNotFound(err) {
		// runc's wording: callers (containerd) look for it.
		return nil, fmt.Errorf("container %q does not exist: %w", id, errdefs.ErrNotFound)
	}
	return ct, err
}

func rootOf(c *cli.Context) string {
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.Command.Name == "oci" {
			return ctx.String("root")
		}
	}
	return c.String("root")
}

var createFlags = []cli.Flag{
	&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Usage: "bundle directory (default: cwd)"},
	&cli.StringFlag{Name: "console-socket", Usage: "unix socket that receives the pty master"},
	&cli.StringFlag{Name: "pid-file", Usage: "file to write the init pid to"},
	&cli.BoolFlag{Name: "no-pivot", Usage: "use MS_MOVE and chroot instead of pivot_root"},
	&cli.BoolFlag{Name: "no-new-keyring", Usage: "keep the caller's session keyring"},
	&cli.IntFlag{Name: "preserve-fds", Usage: "pass this many fds after stdio to the container"},
}

var ociCreate = &cli.Command{
	Name: "create", Usage: "create a container", ArgsUsage: "<id>", Flags: createFlags,
	Action: func(c *cli.Context) error {
		_, err := doCreate(c)
		return ociFail(err)
	},
}

func readSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %v: %w", err, errdefs.ErrNotFound)
	}
	defer f.Close()
	var spec specs.Spec
	dec := json.NewDecoder(io.LimitReader(f, 16<<20))
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("parse config.json: %v: %w", err, errdefs.ErrInvalidArgument)
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
		return nil, fmt.Errorf("connect console socket %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
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

func doCreate(c *cli.Context) (*libct.Container, error) {
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
		NoPivot: c.Bool("no-pivot"), NoNewKeyring: c.Bool("no-new-keyring"),
	}
	for i := 0; i < c.Int("preserve-fds"); i++ {
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

var ociStart = &cli.Command{
	Name: "start", Usage: "start a created container", ArgsUsage: "<id>",
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Start(context.Background()))
	},
}

var ociRun = &cli.Command{
	Name: "run", Usage: "create and start a container", ArgsUsage: "<id>",
	Flags: append(append([]cli.Flag(nil), createFlags...),
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "do not wait for the container"},
		&cli.BoolFlag{Name: "keep", Usage: "do not delete the container after it exits"},
	),
	Action: func(c *cli.Context) error {
		ctx := context.Background()
		if !c.Bool("detach") {
			// Become the subreaper so the init (and anything it
			// leaves behind) is reaped here.
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
		}
		ct, err := doCreate(c)
		if err != nil {
			return ociFail(err)
		}
		var sigs chan os.Signal
		if !c.Bool("detach") {
			sigs = make(chan os.Signal, 32)
			signal.Notify(sigs)
		}
		if err := ct.Start(ctx); err != nil {
			ct.Delete(ctx, true)
			return ociFail(err)
		}
		if c.Bool("detach") {
			return nil
		}
		var copyDone chan struct{}
		if ct.Console != nil {
			copyDone = make(chan struct{})
			go io.Copy(ct.Console, os.Stdin)
			go func() { io.Copy(os.Stdout, ct.Console); close(copyDone) }()
		}
		code := forwardAndWait(ct, ct.InitPid(), sigs)
		if copyDone != nil {
			select {
			case <-copyDone:
			case <-time.After(time.Second):
			}
		}
		if !c.Bool("keep") {
			ct.Delete(ctx, true)
		}
		if code != 0 {
			return cli.Exit("", code)
		}
		return nil
	},
}

// forwardAndWait forwards signals to pid and reaps children until pid
// exits; it returns the exit code (128+signal for a signal death).
func forwardAndWait(ct *libct.Container, pid int, sigs chan os.Signal) int {
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

type ociStateJSON struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Owner       string            `json:"owner"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func toOCIState(s libct.State) ociStateJSON {
	return ociStateJSON{OCIVersion: s.OCIVersion, ID: s.ID, Pid: s.Pid, Status: string(s.Status), Bundle: s.Bundle,
		Rootfs: s.Rootfs, Created: s.Created, Owner: s.Owner, Annotations: s.Annotations}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var ociState = &cli.Command{
	Name: "state", Usage: "print a container's state as JSON", ArgsUsage: "<id>",
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		st, err := ct.State()
		if err != nil {
			return ociFail(err)
		}
		return ociFail(printJSON(toOCIState(st)))
	},
}

// parseSignal accepts "KILL", "SIGKILL", "kill" and "9".
func parseSignal(s string) (unix.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d out of range: %w", n, errdefs.ErrInvalidArgument)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q: %w", s, errdefs.ErrInvalidArgument)
}

var ociKill = &cli.Command{
	Name: "kill", Usage: "signal a container", ArgsUsage: "<id> [signal]",
	Flags: []cli.Flag{&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "signal every process in the container"}},
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		sig, err := parseSignal(c.Args().Get(1))
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Signal(sig, c.Bool("all")))
	},
}

var ociDelete = &cli.Command{
	Name: "delete", Usage: "delete a container", ArgsUsage: "<id>",
	Flags: []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill a running container first"}},
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			if c.Bool("force") && errdefs.IsNotFound(err) {
				return nil
			}
			return ociFail(err)
		}
		if err := ct.Delete(context.Background(), c.Bool("force")); err != nil {
			return ociFail(err)
		}
		if sp := ct.Spec(); sp != nil && sp.Hooks != nil {
			st, _ := ct.State()
			st.Status = libct.StatusStopped
			libct.RunHooks(context.Background(), sp.Hooks.Poststop, st, true)
		}
		return nil
	},
}

var ociExec = &cli.Command{
	Name: "exec", Usage: "run a process in a running container", ArgsUsage: "<id> [command args...]",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "process", Aliases: []string{"p"}, Usage: "process.json"},
		&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}},
		&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}},
		&cli.StringFlag{Name: "pid-file"},
		&cli.StringFlag{Name: "console-socket"},
		&cli.StringFlag{Name: "cwd"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "uid[:gid]"},
		&cli.StringSliceFlag{Name: "additional-gids", Aliases: []string{"g"}},
		&cli.StringSliceFlag{Name: "cap", Aliases: []string{"c"}},
		&cli.BoolFlag{Name: "no-new-privs"},
		&cli.IntFlag{Name: "preserve-fds"},
		&cli.StringFlag{Name: "apparmor", Usage: "AppArmor profile (applied, or refused where the host cannot)"},
		&cli.StringFlag{Name: "process-label", Usage: "SELinux label (applied, or refused where the host cannot)"},
	},
	Action: func(c *cli.Context) error { return ociFail(doExec(c)) },
}

func doExec(c *cli.Context) error {
	ct, err := loadContainer(c)
	if err != nil {
		return err
	}
	var p *specs.Process
	if path := c.String("process"); path != "" {
		b, err := readCapped(path, 4<<20)
		if err != nil {
			return fmt.Errorf("read process: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		p = &specs.Process{}
		if err := json.Unmarshal(b, p); err != nil {
			return fmt.Errorf("parse process: %v: %w", err, errdefs.ErrInvalidArgument)
		}
	} else {
		base := *ct.Spec().Process
		p = &base
		p.Args = c.Args().Tail()
		if len(p.Args) == 0 {
			return fmt.Errorf("exec: no command: %w", errdefs.ErrInvalidArgument)
		}
		p.Terminal = c.Bool("tty")
		p.Env = append(append([]string(nil), p.Env...), c.StringSlice("env")...)
		if cwd := c.String("cwd"); cwd != "" {
			p.Cwd = cwd
		}
		if u := c.String("user"); u != "" {
			uid, gid, _ := strings.Cut(u, ":")
			n, err := strconv.ParseUint(uid, 10, 32)
			if err != nil {
				return fmt.Errorf("--user %q: numeric uid[:gid] only: %w", u, errdefs.ErrInvalidArgument)
			}
			p.User.UID = uint32(n)
			if gid != "" {
				g, err := strconv.ParseUint(gid, 10, 32)
				if err != nil {
					return fmt.Errorf("--user %q: %w", u, errdefs.ErrInvalidArgument)
				}
				p.User.GID = uint32(g)
			}
		}
		for _, g := range c.StringSlice("additional-gids") {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return fmt.Errorf("--additional-gids %q: %w", g, errdefs.ErrInvalidArgument)
			}
			p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(n))
		}
		if caps := c.StringSlice("cap"); len(caps) > 0 && p.Capabilities != nil {
			cp := *p.Capabilities
			cp.Bounding = append(append([]string(nil), cp.Bounding...), caps...)
			cp.Effective = append(append([]string(nil), cp.Effective...), caps...)
			cp.Permitted = append(append([]string(nil), cp.Permitted...), caps...)
			p.Capabilities = &cp
		}
		if c.Bool("no-new-privs") {
			p.NoNewPrivileges = true
		}
		if c.IsSet("apparmor") {
			p.ApparmorProfile = c.String("apparmor")
		}
		if c.IsSet("process-label") {
			p.SelinuxLabel = c.String("process-label")
		}
	}
	opts := libct.ExecOpts{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	for i := 0; i < c.Int("preserve-fds"); i++ {
		opts.ExtraFiles = append(opts.ExtraFiles, os.NewFile(uintptr(3+i), "preserved"))
	}
	if sock := c.String("console-socket"); sock != "" {
		if opts.ConsoleSocket, err = dialConsole(sock); err != nil {
			return err
		}
		defer opts.ConsoleSocket.Close()
	} else if p.Terminal && c.Bool("detach") {
		return fmt.Errorf("exec --tty --detach needs --console-socket: %w", errdefs.ErrInvalidArgument)
	}
	if !c.Bool("detach") {
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	sigs := make(chan os.Signal, 32)
	if !c.Bool("detach") {
		signal.Notify(sigs)
	}
	proc, err := ct.Exec(context.Background(), p, opts)
	if err != nil {
		return err
	}
	if err := writePidFile(c.String("pid-file"), proc.Pid); err != nil {
		return err
	}
	if c.Bool("detach") {
		return nil
	}
	var copyDone chan struct{}
	if proc.Console != nil {
		copyDone = make(chan struct{})
		go io.Copy(proc.Console, os.Stdin)
		go func() { io.Copy(os.Stdout, proc.Console); close(copyDone) }()
	}
	code := forwardAndWait(ct, proc.Pid, sigs)
	if copyDone != nil {
		select {
		case <-copyDone:
		case <-time.After(time.Second):
		}
	}
	if code != 0 {
		return cli.Exit("", code)
	}
	return nil
}

func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

var ociList = &cli.Command{
	Name: "list", Aliases: []string{"ls"}, Usage: "list containers",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}},
	},
	Action: func(c *cli.Context) error {
		ids, err := libct.List(rootOf(c))
		if err != nil {
			return ociFail(err)
		}
		if c.Bool("quiet") {
			for _, id := range ids {
				fmt.Println(id)
			}
			return nil
		}
		states := []ociStateJSON{}
		for _, id := range ids {
			ct, err := libct.Load(rootOf(c), id)
			if err != nil {
				continue
			}
			st, _ := ct.State()
			states = append(states, toOCIState(st))
		}
		if c.String("format") == "json" {
			return ociFail(json.NewEncoder(os.Stdout).Encode(states))
		}
		w := tabwriter.NewWriter(os.Stdout, 12, 1, 3, ' ', 0)
		fmt.Fprint(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n")
		for _, s := range states {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, s.Pid, s.Status, s.Bundle, s.Created.Format(time.RFC3339Nano), s.Owner)
		}
		return w.Flush()
	},
}

var ociPause = &cli.Command{
	Name: "pause", Usage: "freeze a container", ArgsUsage: "<id>",
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Pause())
	},
}

var ociResume = &cli.Command{
	Name: "resume", Usage: "thaw a paused container", ArgsUsage: "<id>",
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Resume())
	},
}

var ociUpdate = &cli.Command{
	Name: "update", Usage: "update a container's resources", ArgsUsage: "<id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "resources", Aliases: []string{"r"}, Usage: "LinuxResources JSON file, - for stdin"},
		&cli.StringFlag{Name: "memory"}, &cli.StringFlag{Name: "memory-reservation"}, &cli.StringFlag{Name: "memory-swap"},
		&cli.Uint64Flag{Name: "cpu-shares"}, &cli.Int64Flag{Name: "cpu-quota"}, &cli.Uint64Flag{Name: "cpu-period"},
		&cli.StringFlag{Name: "cpuset-cpus"}, &cli.StringFlag{Name: "cpuset-mems"},
		&cli.Int64Flag{Name: "pids-limit"}, &cli.UintFlag{Name: "blkio-weight"},
	},
	Action: func(c *cli.Context) error { return ociFail(doUpdate(c)) },
}

func parseBytes(s string) (int64, error) {
	if s == "-1" {
		return -1, nil
	}
	mult := int64(1)
	u := strings.ToLower(s)
	for suf, m := range map[string]int64{"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30} {
		if strings.HasSuffix(u, suf) {
			if n, err := strconv.ParseInt(strings.TrimSuffix(u, suf), 10, 64); err == nil {
				return n * m, nil
			}
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q: %w", s, errdefs.ErrInvalidArgument)
	}
	return n * mult, nil
}

func doUpdate(c *cli.Context) error {
	ct, err := loadContainer(c)
	if err != nil {
		return err
	}
	r := &specs.LinuxResources{}
	if p := c.String("resources"); p != "" {
		var in io.Reader = os.Stdin
		if p != "-" {
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("resources: %v: %w", err, errdefs.ErrInvalidArgument)
			}
			defer f.Close()
			in = f
		}
		if err := json.NewDecoder(io.LimitReader(in, 4<<20)).Decode(r); err != nil {
			return fmt.Errorf("parse resources: %v: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	mem := func() *specs.LinuxMemory {
		if r.Memory == nil {
			r.Memory = &specs.LinuxMemory{}
		}
		return r.Memory
	}
	cpu := func() *specs.LinuxCPU {
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		return r.CPU
	}
	for name, dst := range map[string]func(int64){
		"memory": func(v int64) { mem().Limit = &v }, "memory-reservation": func(v int64) { mem().Reservation = &v },
		"memory-swap": func(v int64) { mem().Swap = &v },
	} {
		if c.IsSet(name) {
			v, err := parseBytes(c.String(name))
			if err != nil {
				return err
			}
			dst(v)
		}
	}
	if c.IsSet("cpu-shares") {
		v := c.Uint64("cpu-shares")
		cpu().Shares = &v
	}
	if c.IsSet("cpu-quota") {
		v := c.Int64("cpu-quota")
		cpu().Quota = &v
	}
	if c.IsSet("cpu-period") {
		v := c.Uint64("cpu-period")
		cpu().Period = &v
	}
	if c.IsSet("cpuset-cpus") {
		cpu().Cpus = c.String("cpuset-cpus")
	}
	if c.IsSet("cpuset-mems") {
		cpu().Mems = c.String("cpuset-mems")
	}
	if c.IsSet("pids-limit") {
		v := c.Int64("pids-limit")
		r.Pids = &specs.LinuxPids{Limit: &v}
	}
	if c.IsSet("blkio-weight") {
		v := uint16(c.Uint("blkio-weight"))
		r.BlockIO = &specs.LinuxBlockIO{Weight: &v}
	}
	return ct.Update(r)
}

// runc's `events --stats` shape (the subset libct measures).
type ociEvent struct {
	Type string    `json:"type"`
	ID   string    `json:"id"`
	Data *ociStats `json:"data,omitempty"`
}

type ociStats struct {
	CPU struct {
		Usage struct {
			Total  uint64   `json:"total"`
			Percpu []uint64 `json:"percpu,omitempty"`
			Kernel uint64   `json:"kernel"`
			User   uint64   `json:"user"`
		} `json:"usage"`
		Throttling struct {
			Periods          uint64 `json:"periods,omitempty"`
			ThrottledPeriods uint64 `json:"throttledPeriods,omitempty"`
			ThrottledTime    uint64 `json:"throttledTime,omitempty"`
		} `json:"throttling"`
	} `json:"cpu"`
	Memory struct {
		Cache uint64 `json:"cache,omitempty"`
		Usage struct {
			Limit   uint64 `json:"limit"`
			Usage   uint64 `json:"usage,omitempty"`
			Max     uint64 `json:"max,omitempty"`
			Failcnt uint64 `json:"failcnt"`
		} `json:"usage"`
		Swap struct {
			Usage uint64 `json:"usage,omitempty"`
		} `json:"swap"`
		Raw map[string]uint64 `json:"raw,omitempty"`
	} `json:"memory"`
	Pids struct {
		Current uint64 `json:"current,omitempty"`
		Limit   uint64 `json:"limit,omitempty"`
	} `json:"pids"`
}

func toOCIStats(s *libct.Stats) *ociStats {
	var o ociStats
	o.CPU.Usage.Total, o.CPU.Usage.Percpu, o.CPU.Usage.Kernel, o.CPU.Usage.User = s.CPU.UsageNanos, s.CPU.PerCPU, s.CPU.KernelNanos, s.CPU.UserNanos
	o.CPU.Throttling.Periods, o.CPU.Throttling.ThrottledPeriods, o.CPU.Throttling.ThrottledTime = s.CPU.Periods, s.CPU.Throttled, s.CPU.ThrottledNs
	o.Memory.Cache = s.Memory.Cache
	o.Memory.Usage.Limit, o.Memory.Usage.Usage, o.Memory.Usage.Max, o.Memory.Usage.Failcnt = s.Memory.Limit, s.Memory.Usage, s.Memory.MaxUsage, s.Memory.Failcnt
	o.Memory.Swap.Usage = s.Memory.SwapUsage
	o.Memory.Raw = s.Memory.Raw
	o.Pids.Current, o.Pids.Limit = s.Pids.Current, s.Pids.Limit
	return &o
}

var ociEvents = &cli.Command{
	Name: "events", Usage: "print container statistics", ArgsUsage: "<id>",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "stats", Usage: "print one stats event and exit"},
		&cli.DurationFlag{Name: "interval", Value: 5 * time.Second},
	},
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		enc := json.NewEncoder(os.Stdout)
		for {
			st, _ := ct.State()
			if st.Status == libct.StatusStopped {
				return ociFail(fmt.Errorf("container %q is stopped: %w", st.ID, errdefs.ErrFailedPrecondition))
			}
			s, err := ct.Stats()
			if err != nil {
				return ociFail(err)
			}
			if err := enc.Encode(ociEvent{Type: "stats", ID: st.ID, Data: toOCIStats(s)}); err != nil {
				return ociFail(err)
			}
			if c.Bool("stats") {
				return nil
			}
			time.Sleep(c.Duration("interval"))
		}
	},
}

var ociPs = &cli.Command{
	Name: "ps", Usage: "list a container's processes", ArgsUsage: "<id> [ps options]",
	Flags: []cli.Flag{&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table"}},
	Action: func(c *cli.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		pids, err := ct.Processes()
		if err != nil {
			return ociFail(err)
		}
		if c.String("format") == "json" {
			if pids == nil {
				pids = []int{}
			}
			return ociFail(json.NewEncoder(os.Stdout).Encode(pids))
		}
		fmt.Println("PID\tCMD")
		for _, p := range pids {
			cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
			fmt.Printf("%d\t%s\n", p, strings.TrimSpace(string(cmd)))
		}
		return nil
	},
}

var ociFeatures = &cli.Command{
	Name: "features", Usage: "print the features this runtime supports (JSON)",
	Action: func(c *cli.Context) error { return printJSON(libct.Features()) },
}
