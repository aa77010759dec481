package ocicli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"golang.org/x/sys/unix"
)

var ociExec = &cmdline.Command{
	Name: "exec", Usage: "run a process in a running container", ArgsUsage: "<id> [command args...]",
	Flags: []cmdline.Flag{
		{Name: "process", Aliases: []string{"p"}, Usage: "process.json"},
		{Name: "tty", Aliases: []string{"t"}, Kind: cmdline.Bool},
		{Name: "detach", Aliases: []string{"d"}, Kind: cmdline.Bool},
		{Name: "pid-file"},
		{Name: "console-socket"},
		{Name: "cwd"},
		{Name: "env", Aliases: []string{"e"}, Kind: cmdline.Strings},
		{Name: "user", Aliases: []string{"u"}, Usage: "uid[:gid]"},
		{Name: "additional-gids", Aliases: []string{"g"}, Kind: cmdline.Strings},
		{Name: "cap", Aliases: []string{"c"}, Kind: cmdline.Strings},
		{Name: "no-new-privs", Kind: cmdline.Bool},
		{Name: "preserve-fds", Kind: cmdline.Int64},
		{Name: "apparmor", Usage: "AppArmor profile (applied, or refused where the host cannot)"},
		{Name: "process-label", Usage: "SELinux label (applied, or refused where the host cannot)"},
	},
	Action: func(c *cmdline.Context) error { return ociFail(doExec(c)) },
}

func doExec(c *cmdline.Context) error {
	ct, err := loadContainer(c)
	if err != nil {
		return err
	}
	var p *specs.Process
	if path := c.String("process"); path != "" {
		b, err := capread.File(path, 4<<20)
		if err != nil {
			return fmt.Errorf("read process: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		p = &specs.Process{}
		if err := json.Unmarshal(b, p); err != nil {
			return fmt.Errorf("parse process: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	} else {
		base := *ct.Spec().Process
		p = &base
		p.Args = c.Args()[1:]
		if len(p.Args) == 0 {
			return fmt.Errorf("exec: no command: %w", errdefs.ErrInvalidArgument)
		}
		p.Terminal = c.Bool("tty")
		p.Env = append(append([]string(nil), p.Env...), c.Strings("env")...)
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
		for _, g := range c.Strings("additional-gids") {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return fmt.Errorf("--additional-gids %q: %w", g, errdefs.ErrInvalidArgument)
			}
			p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(n))
		}
		if caps := c.Strings("cap"); len(caps) > 0 && p.Capabilities != nil {
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
	for i := int64(0); i < c.Int64("preserve-fds"); i++ {
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
	var sigs *signalForwarder
	if !c.Bool("detach") {
		sigs = forwardSignals()
		sigs.installRest()
	}
	useEmbeddedInit(rootOf(c))
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
	if code := attachAndWait(ct, proc.Pid, proc.Console, sigs); code != 0 {
		return cmdline.Exit("", code)
	}
	return nil
}

// attachAndWait connects a terminal (when there is one) to our stdio,
// forwards signals to pid and waits for it: its exit code, once the
// terminal's output is drained (for a second at most).
func attachAndWait(ct *libct.Container, pid int, console *os.File, sigs *signalForwarder) int {
	var copyDone chan struct{}
	if console != nil {
		copyDone = make(chan struct{})
		go io.Copy(console, os.Stdin)
		go func() { io.Copy(os.Stdout, console); close(copyDone) }()
	}
	code := forwardAndWait(ct, pid, sigs)
	if copyDone != nil {
		select {
		case <-copyDone:
		case <-time.After(time.Second):
		}
	}
	return code
}
