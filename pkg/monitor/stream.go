package monitor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// ExecSession is a process started by Exec. Its stdio are the caller's:
// the bytes never go through the monitor, which stays its reaper.
type ExecSession struct {
	Pid int
	// Stdin (nil unless asked for), Stdout and Stderr are pipes to the
	// process; with a terminal they are nil and Console is its master.
	Stdin, Stdout, Stderr *os.File
	Console               *os.File

	conn *net.UnixConn
	rd   *bufio.Reader
}

// Exec starts p in container id with its stdio held by the caller: a
// stdin pipe when stdin, and a terminal (p.Terminal is set) when tty.
// Wait returns its exit code; Close kills it if it still runs.
func (c *Client) Exec(ctx context.Context, id string, p *specs.Process, stdin, tty bool) (*ExecSession, error) {
	pp := *p
	pp.Terminal = tty
	conn, resp, rd, files, err := c.callKeep(ctx, &Request{Op: OpExec, ID: id, Process: &pp, Stdin: stdin, Tty: tty})
	if err != nil {
		return nil, err
	}
	s := &ExecSession{Pid: resp.Pid, conn: conn, rd: rd}
	want := 2
	if tty {
		want = 1
	} else if stdin {
		want = 3
	}
	if len(files) != want {
		s.Close()
		closeFiles(files)
		return nil, fmt.Errorf("monitor exec: %d fds, want %d: %w", len(files), want, errdefs.ErrInternal)
	}
	switch {
	case tty:
		s.Console = files[0]
	case stdin:
		s.Stdin, s.Stdout, s.Stderr = files[0], files[1], files[2]
	default:
		s.Stdout, s.Stderr = files[0], files[1]
	}
	return s, nil
}

// Wait waits for the exit of the process and returns its exit code (128+n
// for a signal n). It fails when the session is closed first, or the
// monitor goes away.
func (s *ExecSession) Wait() (int, error) {
	line, err := s.rd.ReadBytes('\n')
	if err != nil {
		return 0, fmt.Errorf("monitor exec: waiting for the exit: %w: %w", err, errdefs.ErrUnavailable)
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		return 0, fmt.Errorf("monitor exec: bad exit line: %w: %w", err, errdefs.ErrInternal)
	}
	if r.Error != nil {
		return 0, r.Error.Err()
	}
	return r.ExitCode, nil
}

// Close ends the session and closes the caller's fds: the process is
// killed if it has not exited.
func (s *ExecSession) Close() error {
	err := s.conn.Close()
	closeFiles([]*os.File{s.Stdin, s.Stdout, s.Stderr, s.Console})
	return err
}

// AttachSession is an attachment to a container's output.
type AttachSession struct {
	// Stdin writes to the container's stdin (or its terminal, whose
	// window size it sets too); nil when not asked for or the container
	// has none.
	Stdin *os.File

	conn *net.UnixConn
	rd   *bufio.Reader
}

// Attach attaches to container id: Copy gets its output (the streams
// asked for) until it exits.
func (c *Client) Attach(ctx context.Context, id string, stdin, stdout, stderr bool) (*AttachSession, error) {
	conn, _, rd, files, err := c.callKeep(ctx, &Request{Op: OpAttach, ID: id, Stdin: stdin, Stdout: stdout, Stderr: stderr})
	if err != nil {
		return nil, err
	}
	a := &AttachSession{conn: conn, rd: rd}
	if len(files) > 1 {
		closeFiles(files[1:])
	}
	if len(files) > 0 {
		a.Stdin = files[0]
	}
	return a, nil
}

// Copy copies the container's output to stdout and stderr (nil: dropped)
// until it ends: nil when the container's output ended (it exited), an
// error when the session was closed or the monitor went away.
func (a *AttachSession) Copy(stdout, stderr io.Writer) error {
	var h [FrameHeader]byte
	for {
		if _, err := io.ReadFull(a.rd, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("monitor attach: %w: %w", err, errdefs.ErrUnavailable)
		}
		n := int64(binary.BigEndian.Uint32(h[1:]))
		w := stdout
		if h[0] == FrameStderr {
			w = stderr
		}
		if w == nil {
			w = io.Discard
		}
		if _, err := io.CopyN(w, a.rd, n); err != nil {
			return fmt.Errorf("monitor attach: %w", err)
		}
	}
}

// Close ends the attachment (the container goes on).
func (a *AttachSession) Close() error {
	if a.Stdin != nil {
		a.Stdin.Close()
	}
	return a.conn.Close()
}

// callKeep sends req and reads the reply line and the fds that came with
// it; the connection stays open for what follows, read through rd.
func (c *Client) callKeep(ctx context.Context, req *Request) (*net.UnixConn, *Response, *bufio.Reader, []*os.File, error) {
	conn, err := dialUnix(c.Socket)
	if err != nil {
		return nil, nil, nil, nil, dialError(c.Socket, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	resp, rest, files, err := roundTrip(conn, req)
	if !stop() || ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		conn.Close()
		closeFiles(files)
		return nil, nil, nil, nil, err
	}
	conn.SetDeadline(time.Time{})
	rd := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(rest), conn), 64<<10)
	return conn, resp, rd, files, nil
}

// roundTrip writes req and reads one reply line with its fds; rest is
// what was read after the line.
func roundTrip(conn *net.UnixConn, req *Request) (*Response, []byte, []*os.File, error) {
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, nil, nil, fmt.Errorf("monitor %s: %w: %w", req.Op, err, errdefs.ErrUnavailable)
	}
	var (
		buf   []byte
		files []*os.File
		b     = make([]byte, 4096)
		oob   = make([]byte, unix.CmsgSpace(4*4))
	)
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(b, oob)
		if oobn > 0 {
			fs, ferr := rightsFiles(oob[:oobn])
			files = append(files, fs...)
			if ferr != nil {
				return nil, nil, files, ferr
			}
		}
		if n > 0 {
			// n is -1 when the read failed (recvmsg's return value).
			buf = append(buf, b[:n]...)
		}
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			var resp Response
			if err := json.Unmarshal(buf[:i], &resp); err != nil {
				return nil, nil, files, fmt.Errorf("monitor %s: bad reply: %w: %w", req.Op, err, errdefs.ErrInternal)
			}
			if resp.Error != nil {
				return nil, nil, files, resp.Error.Err()
			}
			return &resp, buf[i+1:], files, nil
		}
		if err != nil {
			return nil, nil, files, fmt.Errorf("monitor %s: %w: %w", req.Op, err, errdefs.ErrUnavailable)
		}
		if len(buf) > maxRequest {
			return nil, nil, files, fmt.Errorf("monitor %s: reply too long: %w", req.Op, errdefs.ErrInternal)
		}
	}
}

// rightsFiles turns the fds of SCM_RIGHTS messages into pollable files
// (so that closing one ends a read blocked on it).
func rightsFiles(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("monitor: control message: %w: %w", err, errdefs.ErrInternal)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			unix.SetNonblock(fd, true)
			files = append(files, os.NewFile(uintptr(fd), "monitor-fd"))
		}
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// CloseStdin closes the stdin of container id (after the attach of a
// stdin_once container).
func (c *Client) CloseStdin(ctx context.Context, id string) error {
	_, err := c.Call(ctx, &Request{Op: OpCloseStdin, ID: id})
	return err
}
