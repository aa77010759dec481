package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
	"github.com/shim-cri/shim/pkg/nspin"
)

const (
	// execDrain bounds the wait for an exec'd process's output after its
	// exit: only a child it left running can hold the pipes open longer.
	execDrain = 2 * time.Second
	// portDialTimeout bounds the connect to the pod's port.
	portDialTimeout = 10 * time.Second
)

// portForwardGrace is how long the pod's side of a forwarded connection
// may go on answering once the client is done sending (a variable for
// tests).
var portForwardGrace = 2 * time.Second

// execStream runs a command in a container with the client's stdio and
// returns its exit code (a non-zero code is not an error).
func (r *Runtime) execStream(ctx context.Context, j *Job, req ExecStreamRequest) (int, error) {
	c, err := r.runningContainer(ctx, req.ID)
	if err != nil {
		return 0, err
	}
	if len(req.Cmd) == 0 {
		return 0, fmt.Errorf("exec without a command: %w", errdefs.ErrInvalidArgument)
	}
	proc, err := execProcess(c.Bundle, req.Cmd)
	if err != nil {
		return 0, err
	}
	if req.Tty && !hasEnv(proc.Env, "TERM") {
		proc.Env = append(proc.Env, "TERM=xterm")
	}
	mon, err := r.monitorOf(c)
	if err != nil {
		return 0, err
	}
	s, err := mon.Exec(ctx, c.ID, proc, req.Stdin != nil, req.Tty)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	j.Logf("exec pid %d", s.Pid)
	code, err := pumpExec(ctx, s, req.StreamIO)
	if err == nil {
		j.Logf("exit code %d", code)
	}
	return code, err
}

func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if len(e) > len(name) && e[:len(name)] == name && e[len(name)] == '=' {
			return true
		}
	}
	return false
}

// pumpExec copies between the client and the process until it exited and
// its output is drained, or ctx ends (the caller closes the session: the
// process is killed, and the copies end with their fds).
func pumpExec(ctx context.Context, s *monitor.ExecSession, sio StreamIO) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out, errOut, in := s.Stdout, s.Stderr, s.Stdin
	if sio.Tty {
		out, in = s.Console, s.Console
		go resizeLoop(ctx, s.Console, sio.Resize)
	}
	var wg sync.WaitGroup
	for _, p := range []struct {
		w io.Writer
		f *os.File
	}{{sio.Stdout, out}, {sio.Stderr, errOut}} {
		if p.f == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			copyOutput(p.w, p.f)
		}()
	}
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	if sio.Stdin != nil && in != nil {
		go func() {
			io.Copy(in, sio.Stdin)
			if !sio.Tty {
				in.Close() // EOF for the process; a terminal stays open
			}
		}()
	}
	type exit struct {
		code int
		err  error
	}
	exited := make(chan exit, 1)
	go func() { code, err := s.Wait(); exited <- exit{code, err} }()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case e := <-exited:
		if e.err != nil {
			return 0, e.err
		}
		select {
		case <-drained:
		case <-time.After(execDrain):
		case <-ctx.Done():
		}
		return e.code, nil
	}
}

// copyOutput copies a process's output to the client (nil: dropped) until
// EOF; a terminal ends with EIO once no process holds it.
func copyOutput(w io.Writer, f *os.File) {
	if w == nil {
		w = io.Discard
	}
	io.Copy(w, f)
}

// resizeLoop sets the window size of the terminal from the client's.
func resizeLoop(ctx context.Context, tty *os.File, sizes <-chan TermSize) {
	if sizes == nil || tty == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case sz, ok := <-sizes:
			if !ok {
				return
			}
			if sz.Width == 0 || sz.Height == 0 {
				continue
			}
			rc, err := tty.SyscallConn()
			if err != nil {
				return
			}
			rc.Control(func(fd uintptr) {
				unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
			})
		}
	}
}

// attachStream attaches the client to a container's stdio held by its
// monitor, until the container exits or the client goes away.
func (r *Runtime) attachStream(ctx context.Context, j *Job, req AttachStreamRequest) (struct{}, error) {
	c, err := r.runningContainer(ctx, req.ID)
	if err != nil {
		return struct{}{}, err
	}
	cfg := c.view().config
	mon, err := r.monitorOf(c)
	if err != nil {
		return struct{}{}, err
	}
	wantStdin := req.Stdin != nil && cfg.GetStdin()
	tty := cfg.GetTty()
	a, err := mon.Attach(ctx, c.ID, wantStdin, req.Stdout != nil, req.Stderr != nil && !tty)
	if err != nil {
		return struct{}{}, err
	}
	defer a.Close()
	if wantStdin && cfg.GetStdinOnce() {
		// The first attach session's end closes the container's stdin.
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if a.Stdin != nil {
				a.Stdin.Close()
			}
			if err := mon.CloseStdin(cctx, c.ID); err != nil && !errdefs.IsNotFound(err) {
				log.G(ctx).WithError(err).Warn("closing the stdin of the container")
			}
		}()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if tty && a.Stdin != nil {
		go resizeLoop(ctx, a.Stdin, req.Resize)
	}
	if wantStdin && a.Stdin != nil {
		go func() {
			io.Copy(a.Stdin, req.Stdin)
			if tty {
				return
			}
			a.Stdin.Close()
			if cfg.GetStdinOnce() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				mon.CloseStdin(cctx, c.ID)
			}
		}()
	}
	done := make(chan error, 1)
	go func() { done <- a.Copy(req.Stdout, req.Stderr) }()
	j.Logf("attached")
	select {
	case err := <-done:
		return struct{}{}, err
	case <-ctx.Done():
		return struct{}{}, ctx.Err()
	}
}

// portForwardStream connects the client's stream to a TCP port of the pod,
// on its loopback inside its network namespace (the host's for a pod on
// the host network).
func (r *Runtime) portForwardStream(ctx context.Context, j *Job, req PortForwardStreamRequest) (struct{}, error) {
	sb, err := r.readySandbox(req.PodID)
	if err != nil {
		return struct{}{}, err
	}
	if req.Port <= 0 || req.Port > 65535 {
		return struct{}{}, fmt.Errorf("port %d: %w", req.Port, errdefs.ErrInvalidArgument)
	}
	conn, err := dialPod(ctx, sb.view().NetNS, req.Port)
	if err != nil {
		return struct{}{}, err
	}
	defer conn.Close()
	j.Logf("connected to port %d", req.Port)
	return struct{}{}, forward(ctx, conn, req.Stream)
}

// dialPod connects to port on the loopback of the network namespace
// pinned at netns ("" for the host's), IPv4 first.
func dialPod(ctx context.Context, netns string, port int32) (net.Conn, error) {
	var conn net.Conn
	dial := func() error {
		d := net.Dialer{Timeout: portDialTimeout}
		var errs []error
		for _, addr := range []string{"127.0.0.1", "::1"} {
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(int(port))))
			if err == nil {
				conn = c
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	var err error
	if netns == "" {
		err = dial()
	} else {
		err = nspin.Do(nspin.Net, netns, dial)
	}
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("port %d of the pod: %w: %w", port, err, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("port %d of the pod: %w", port, err)
	}
	return conn, nil
}

// forward copies both ways between the pod's connection and the client's
// stream. When the pod's side ends, so does the forward. When the client
// is done sending, the pod's side is half-closed and has portForwardGrace
// to finish its answer (a client that went away looks the same).
func forward(ctx context.Context, conn net.Conn, stream io.ReadWriteCloser) error {
	toPod, fromPod := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		toPod <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		fromPod <- err
	}()
	select {
	case err := <-fromPod:
		return err
	case err := <-toPod:
		select {
		case e := <-fromPod:
			return errors.Join(err, e)
		case <-time.After(portForwardGrace):
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}
