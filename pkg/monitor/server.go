package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
)

// SocketName is the monitor's socket in the pod directory.
const SocketName = "monitor.sock"

// ExitFile is written in a container's bundle when its init exits.
const ExitFile = "exit.json"

// maxExecOutput caps each stream of ExecSync output.
const maxExecOutput = 16 << 20

// Config configures a monitor.
type Config struct {
	PodID  string
	Dir    string // pod state directory, holds the socket
	Driver execdrv.Driver
	Log    *logrus.Entry
}

// Server is a running monitor.
type Server struct {
	cfg    Config
	drv    execdrv.Driver
	log    *logrus.Entry
	reaper *reaper
	l      *net.UnixListener

	mu   sync.Mutex
	ctrs map[string]*ctr
	subs map[chan Event]struct{}
	done chan struct{}
	once sync.Once

	trimming atomic.Bool
}

type ctr struct {
	id, bundle string
	pid        int
	log        *logFile
	stdin      *os.File // write end, held open for attach
	copying    sync.WaitGroup
	exited     chan struct{}
	exit       *ExitRecord
}

// trim gives the memory a create or an exec used back to the system soon
// after: a monitor lives as long as its pod and should stay small.
func (s *Server) trim() {
	if !s.trimming.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(200*time.Millisecond, func() {
		s.trimming.Store(false)
		debug.FreeOSMemory()
	})
}

// Listen makes the monitor a subreaper and opens its socket.
func Listen(cfg Config) (*Server, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("becoming subreaper: %w", err)
	}
	l, err := listenUnix(filepath.Join(cfg.Dir, SocketName))
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Server{
		cfg: cfg, drv: cfg.Driver, log: cfg.Log.WithField("pod_id", cfg.PodID), reaper: newReaper(), l: l,
		ctrs: map[string]*ctr{}, subs: map[chan Event]struct{}{}, done: make(chan struct{}),
	}, nil
}

// Serve answers requests until a shutdown request or ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.l.Close()
	}()
	for {
		conn, err := s.l.AcceptUnix()
		if err != nil {
			select {
			case <-s.done:
				return nil
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go s.handle(ctx, conn)
	}
}

func (s *Server) handle(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	var req Request
	if err := json.NewDecoder(io.LimitReader(conn, maxMessage)).Decode(&req); err != nil {
		return
	}
	if req.Op == OpEvents {
		s.stream(conn)
		return
	}
	resp, err := s.dispatch(ctx, &req)
	if resp == nil {
		resp = &Response{}
	}
	if err != nil {
		w := errdefs.ToWire(err)
		resp.Error = &w
		s.log.WithError(err).WithField("container_id", req.ID).Debugf("monitor %s failed", req.Op)
	}
	bw := bufio.NewWriterSize(conn, 64<<10)
	json.NewEncoder(bw).Encode(resp)
	bw.Flush()
	switch req.Op {
	case OpCreate, OpExecSync, OpDelete:
		s.trim()
	}
	if req.Op == OpShutdown && err == nil {
		s.once.Do(func() { close(s.done) })
	}
}

func (s *Server) get(id string) (*ctr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.ctrs[id]
	if c == nil {
		return nil, fmt.Errorf("container %s is not in this pod's monitor: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *Server) dispatch(ctx context.Context, req *Request) (*Response, error) {
	switch req.Op {
	case OpCreate:
		pid, err := s.create(ctx, req)
		return &Response{Pid: pid}, err
	case OpStart:
		if _, err := s.get(req.ID); err != nil {
			return nil, err
		}
		return nil, s.drv.Start(ctx, req.ID)
	case OpKill:
		c, err := s.get(req.ID)
		if err != nil {
			return nil, err
		}
		if c.exit != nil && !req.All {
			return nil, nil // already exited: nothing to signal
		}
		return nil, s.drv.Kill(ctx, req.ID, unix.Signal(req.Signal), req.All)
	case OpDelete:
		return nil, s.delete(ctx, req)
	case OpExecSync:
		return s.execSync(ctx, req)
	case OpReopenLog:
		c, err := s.get(req.ID)
		if err != nil {
			return nil, err
		}
		return nil, c.log.reopen()
	case OpState:
		return s.state(), nil
	case OpUpdate:
		if _, err := s.get(req.ID); err != nil {
			return nil, err
		}
		if req.Resources == nil {
			return nil, fmt.Errorf("update without resources: %w", errdefs.ErrInvalidArgument)
		}
		return nil, s.drv.Update(ctx, req.ID, req.Resources)
	case OpShutdown:
		return nil, s.shutdown(ctx)
	}
	return nil, fmt.Errorf("unknown monitor op %q: %w", req.Op, errdefs.ErrInvalidArgument)
}

func (s *Server) create(ctx context.Context, req *Request) (pid int, retErr error) {
	if req.ID == "" || req.Bundle == "" {
		return 0, fmt.Errorf("create needs an id and a bundle: %w", errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	if s.ctrs[req.ID] != nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("container %s exists in the monitor: %w", req.ID, errdefs.ErrAlreadyExists)
	}
	c := &ctr{id: req.ID, bundle: req.Bundle, exited: make(chan struct{})}
	s.ctrs[req.ID] = c
	s.mu.Unlock()
	var closeAfter []*os.File
	defer func() {
		for _, f := range closeAfter {
			f.Close()
		}
		if retErr != nil {
			s.mu.Lock()
			delete(s.ctrs, req.ID)
			s.mu.Unlock()
			if c.log != nil {
				c.log.close()
			}
			if c.stdin != nil {
				c.stdin.Close()
			}
		}
	}()
	var err error
	if c.log, err = openLog(req.LogPath); err != nil {
		return 0, fmt.Errorf("opening log %s: %w", req.LogPath, err)
	}
	var io execdrv.IO
	var readers []struct {
		name string
		r    *os.File
	}
	if req.Tty {
		return 0, fmt.Errorf("tty containers: %w", errdefs.ErrNotImplemented)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, err
	}
	io.Stdout, io.Stderr = outW, errW
	closeAfter = append(closeAfter, outW, errW)
	readers = append(readers, struct {
		name string
		r    *os.File
	}{"stdout", outR}, struct {
		name string
		r    *os.File
	}{"stderr", errR})
	if req.Stdin {
		inR, inW, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		io.Stdin, c.stdin = inR, inW
		closeAfter = append(closeAfter, inR)
	}
	pid, err = s.drv.Create(ctx, req.ID, req.Bundle, execdrv.CreateOpts{IO: io})
	if err != nil {
		for _, r := range readers {
			r.r.Close()
		}
		return 0, err
	}
	c.pid = pid
	for _, r := range readers {
		c.copying.Add(1)
		go func(name string, f *os.File) {
			defer c.copying.Done()
			defer f.Close()
			if err := c.log.copyStream(name, f); err != nil {
				s.log.WithError(err).Warnf("container %s %s", c.id, name)
			}
		}(r.name, r.r)
	}
	exitCh := s.reaper.watch(pid)
	go s.waitExit(c, exitCh)
	return pid, nil
}

// waitExit records the init's exit once it happens.
func (s *Server) waitExit(c *ctr, exitCh <-chan Exit) {
	ex := <-exitCh
	rec := &ExitRecord{Exit: ex, FinishedAt: time.Now().UTC()}
	// Let the log copiers drain what the container wrote last.
	drained := make(chan struct{})
	go func() { c.copying.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		s.log.Warnf("container %s: output still open 2s after its init exited", c.id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if st, err := s.drv.Stats(ctx, c.id); err == nil && st.Memory.OOMKills > 0 {
		rec.OOMKilled = true
	}
	cancel()
	if err := writeExitRecord(c.bundle, rec); err != nil {
		s.log.WithError(err).Errorf("container %s: recording exit", c.id)
	}
	s.mu.Lock()
	c.exit = rec
	close(c.exited)
	for ch := range s.subs {
		select {
		case ch <- Event{ID: c.id, Exit: *rec}:
		default: // a stuck subscriber reads exit.json later
		}
	}
	s.mu.Unlock()
	s.log.WithField("container_id", c.id).Infof("container exited: code %d", rec.Code)
}

func writeExitRecord(bundle string, rec *ExitRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := filepath.Join(bundle, ExitFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(bundle, ExitFile))
}

// ReadExitRecord reads a container's exit record; ErrNotFound if it has not exited.
func ReadExitRecord(bundle string) (*ExitRecord, error) {
	b, err := os.ReadFile(filepath.Join(bundle, ExitFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no exit record in %s: %w", bundle, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var rec ExitRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("exit record %s: %v: %w", bundle, err, errdefs.ErrDataLoss)
	}
	return &rec, nil
}

func (s *Server) delete(ctx context.Context, req *Request) error {
	c, err := s.get(req.ID)
	if err != nil {
		return err
	}
	if err := s.drv.Delete(ctx, req.ID, req.Force); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if req.Force {
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("container %s did not exit after delete: %w", req.ID, errdefs.ErrUnavailable)
		}
	}
	s.mu.Lock()
	delete(s.ctrs, req.ID)
	s.mu.Unlock()
	if c.stdin != nil {
		c.stdin.Close()
	}
	return c.log.close()
}

func (s *Server) state() *Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &Response{MonitorPid: os.Getpid()}
	for _, c := range s.ctrs {
		resp.Containers = append(resp.Containers, ContainerState{ID: c.id, Pid: c.pid, Exited: c.exit})
	}
	return resp
}

func (s *Server) stream(conn *net.UnixConn) {
	ch := make(chan Event, 256)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	// Notice the daemon going away.
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, conn); close(gone) }()
	enc := json.NewEncoder(conn)
	for {
		select {
		case ev := <-ch:
			if err := enc.Encode(ev); err != nil {
				return
			}
		case <-gone:
			return
		case <-s.done:
			return
		}
	}
}

// shutdown kills what is left and lets Serve return.
func (s *Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	var live []*ctr
	for _, c := range s.ctrs {
		if c.exit == nil {
			live = append(live, c)
		}
	}
	s.mu.Unlock()
	for _, c := range live {
		s.drv.Kill(ctx, c.id, unix.SIGKILL, true)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("container %s did not die: %w", c.id, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// execSync runs a process in a container and collects its output.
func (s *Server) execSync(ctx context.Context, req *Request) (*Response, error) {
	c, err := s.get(req.ID)
	if err != nil {
		return nil, err
	}
	if c.exit != nil {
		return nil, fmt.Errorf("container %s is not running: %w", req.ID, errdefs.ErrFailedPrecondition)
	}
	if req.Process == nil || len(req.Process.Args) == 0 {
		return nil, fmt.Errorf("exec needs a command: %w", errdefs.ErrInvalidArgument)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return nil, err
	}
	defer errR.Close()
	pid, err := s.drv.Exec(ctx, req.ID, req.Process, execdrv.IO{Stdout: outW, Stderr: errW})
	outW.Close()
	errW.Close()
	if err != nil {
		return nil, err
	}
	exitCh := s.reaper.watch(pid)
	var stdout, stderr capped
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); stdout.readFrom(outR) }()
	go func() { defer wg.Done(); stderr.readFrom(errR) }()

	var timeout <-chan time.Time
	if req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var ex Exit
	timedOut := false
	select {
	case ex = <-exitCh:
	case <-timeout:
		timedOut = true
		unix.Kill(pid, unix.SIGKILL)
		ex = <-exitCh
	case <-c.exited:
		ex = <-exitCh
	}
	// Children of the command may hold the pipes open: give them a moment.
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		outR.SetReadDeadline(time.Now())
		errR.SetReadDeadline(time.Now())
		<-drained
	}
	resp := &Response{Stdout: stdout.buf, Stderr: stderr.buf, ExitCode: ex.Code, Truncated: stdout.truncated || stderr.truncated}
	if timedOut {
		return resp, fmt.Errorf("command %q timed out after %s: %w", req.Process.Args[0], req.Timeout, context.DeadlineExceeded)
	}
	return resp, nil
}

// capped keeps the first maxExecOutput bytes of a stream and drains the rest.
type capped struct {
	buf       []byte
	truncated bool
}

func (c *capped) readFrom(r io.Reader) {
	b := make([]byte, 32<<10)
	for {
		n, err := r.Read(b)
		if room := maxExecOutput - len(c.buf); room > 0 {
			c.buf = append(c.buf, b[:min(n, room)]...)
			if n > room {
				c.truncated = true
			}
		} else if n > 0 {
			c.truncated = true
		}
		if err != nil {
			return
		}
	}
}
