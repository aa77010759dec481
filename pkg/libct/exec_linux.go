package libct

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

// Exec starts p in the running container's namespaces and cgroup, with the
// container's seccomp filter. The calling process becomes its parent.
// It returns once the process has exec'd (or failed to, with a typed error).
func (c *Container) Exec(ctx context.Context, p *specs.Process, opts ExecOpts) (*Process, error) {
	if err := checkExecProcess(p); err != nil {
		return nil, err
	}
	if st := c.status(); st != StatusRunning && st != StatusCreated {
		return nil, fmt.Errorf("container %q is %s: %w", c.st.ID, st, errdefs.ErrFailedPrecondition)
	}
	spec := c.st.Spec
	bs, userNS := execBootstrap(spec, c.st.Pid)
	cg, err := c.cgroup()
	if err != nil {
		return nil, err
	}
	sp := &setnsProcess{
		launch: launch{bs: bs, extra: opts.ExtraFiles, stdio: stdio{opts.Stdin, opts.Stdout, opts.Stderr},
			cg: cg, idMaps: spec.Linux},
		cfg: &initConfig{
			Mode: modeExec, ID: c.st.ID, Process: p, ExtraFiles: len(opts.ExtraFiles),
			UserNS: userNS, Seccomp: spec.Linux.Seccomp, InitPid: c.st.Pid,
			CgroupPath: c.st.CgroupPath,
		},
		consoleSock: opts.ConsoleSocket,
	}
	res, err := sp.start(ctx)
	if err != nil {
		// ENOMEM: the C stage's clone into a PID namespace whose init
		// is gone.
		racy := !errdefs.Classified(err) || errdefs.Is(err, errdefs.ErrInternal) || errdefs.IsResourceExhausted(err)
		if ctx.Err() == nil && (c.exiting() || racy && c.exitedDuring()) {
			// The container's init died while the exec joined it: its
			// namespaces were gone, or the kernel killed everything in
			// its PID namespace, the exec included (kubelet's probes
			// race container exits often).
			return nil, fmt.Errorf("container %q exited while the exec started (%v): %w", c.st.ID, err, errdefs.ErrFailedPrecondition)
		}
		return nil, err
	}
	defer res.conn.Close()
	// The init pipe is close-on-exec: EOF means the exec succeeded.
	var m initMsg
	if _, err := readFrame(res.conn, &m); err == nil && m.Type == msgError && m.Error != nil {
		if res.console != nil {
			res.console.Close()
		}
		waitPid(res.pid)
		return nil, m.Error.Err()
	} else if err != nil && !errors.Is(err, io.EOF) {
		if ctx.Err() != nil {
			reapAll([]int{res.pid})
			return nil, ctx.Err()
		}
	}
	return &Process{Pid: res.pid, Console: res.console}, nil
}

// checkExecProcess checks the process of an exec (a cwd of "" is "/"). The
// setns init checks it too: the pod's monitor starts execs from the
// container's template (exectmpl_linux.go) with the process as the daemon
// sent it.
func checkExecProcess(p *specs.Process) error {
	if p == nil {
		return fmt.Errorf("exec: no process: %w", errdefs.ErrInvalidArgument)
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	return validateProcess(p)
}

// execBootstrap is the C stage's bootstrap for an exec: join every
// namespace of the container's init (pid), the mount namespace last. It
// also reports whether the container has a user namespace.
func execBootstrap(spec *specs.Spec, pid int) (bootstrap, bool) {
	bs := bootstrap{}
	pidStr := strconv.Itoa(pid)
	var mnt string
	userNS := false
	for _, ns := range spec.Linux.Namespaces {
		name := procNSName[ns.Type]
		path := "/proc/" + pidStr + "/ns/" + name
		if ns.Type == specs.UserNamespace {
			userNS = true
		}
		if ns.Type == specs.MountNamespace {
			mnt = name + ":" + path
			continue
		}
		bs.nsPaths = append(bs.nsPaths, name+":"+path)
	}
	if mnt != "" {
		bs.nsPaths = append(bs.nsPaths, mnt)
	}
	return bs, userNS
}

// exitedDuring reports whether the container's init is gone or going,
// giving a dying init a moment to show it.
func (c *Container) exitedDuring() bool {
	for i := 0; i < 50; i++ {
		if c.exiting() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// exiting reports whether the container's init is gone, a zombie, or
// past dropping its namespaces (it waits, so, for the rest of its PID
// namespace to die before it becomes a zombie).
func (c *Container) exiting() bool {
	if !alive(c.st.Pid, c.st.PidStart) {
		return true
	}
	_, err := os.Readlink("/proc/" + strconv.Itoa(c.st.Pid) + "/ns/mnt")
	return errors.Is(err, os.ErrNotExist)
}

// Wait waits for an exec'd process; only its parent can.
func (p *Process) Wait() (ExitStatus, error) {
	if p.waited {
		return ExitStatus{}, fmt.Errorf("process %d already waited for: %w", p.Pid, errdefs.ErrFailedPrecondition)
	}
	s, err := waitPid(p.Pid)
	if err == nil {
		p.waited = true
	}
	return s, err
}

// Signal signals an exec'd process that has not been waited for.
func (p *Process) Signal(sig unix.Signal) error {
	if p.waited {
		return fmt.Errorf("process %d exited: %w", p.Pid, errdefs.ErrFailedPrecondition)
	}
	return unix.Kill(p.Pid, sig)
}
