package monitor

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// consoleSocket receives the pty master of a process that asks for a
// terminal: the runtime connects to it and sends the master with
// SCM_RIGHTS (runc's --console-socket protocol; libct speaks it too).
type consoleSocket struct {
	dir, path string
	l         *net.UnixListener
	got       chan consoleResult
	taken     bool
}

type consoleResult struct {
	f   *os.File
	err error
}

// newConsoleSocket listens on a socket in a private directory and accepts
// one connection in the background.
func newConsoleSocket() (*consoleSocket, error) {
	dir, err := os.MkdirTemp("", "shim-console-")
	if err != nil {
		return nil, err
	}
	s := &consoleSocket{dir: dir, path: filepath.Join(dir, "sock"), got: make(chan consoleResult, 1)}
	s.l, err = net.ListenUnix("unix", &net.UnixAddr{Name: s.path, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { s.got <- s.accept() }()
	return s, nil
}

func (s *consoleSocket) accept() consoleResult {
	c, err := s.l.AcceptUnix()
	if err != nil {
		return consoleResult{err: err}
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(helperTimeout))
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return consoleResult{err: err}
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return consoleResult{err: err}
	}
	var fds []int
	for _, m := range msgs {
		if r, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, r...)
		}
	}
	if len(fds) == 0 {
		return consoleResult{err: fmt.Errorf("console socket: no pty master received: %w", errdefs.ErrInternal)}
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	unix.CloseOnExec(fds[0])
	return consoleResult{f: os.NewFile(uintptr(fds[0]), "pty-master")}
}

// Master waits for the pty master.
func (s *consoleSocket) Master(ctx context.Context) (*os.File, error) {
	select {
	case r := <-s.got:
		s.taken = true
		return r.f, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the pty master: %w", ctx.Err())
	}
}

// Close stops listening and removes the socket; a master received but
// not taken is closed.
func (s *consoleSocket) Close() {
	s.l.Close()
	os.RemoveAll(s.dir)
	if !s.taken {
		go func() {
			if r := <-s.got; r.f != nil {
				r.f.Close()
			}
		}()
	}
}
