// Package streamsrv is the CRI streaming server: the HTTP endpoints
// (SPDY and WebSocket, from k8s.io/cri-streaming, the library kubelet and
// containerd use) whose URLs the CRI calls Exec, Attach and PortForward
// return. Each session runs as an engine job (engine.StreamJobs).
//
// A session ends when its process or container does, when the client goes
// away (noticed on the connection itself: a hijacked HTTP connection
// cancels nothing), or when the server stops (daemon shutdown): the
// containers never depend on it.
package streamsrv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// Config is the server's configuration (the [streaming] keys).
type Config struct {
	Address         string // host:port; port 0 picks a free one
	TLSCert, TLSKey string // both empty: plain HTTP
	IdleTimeout     time.Duration
	CreationTimeout time.Duration // 0: the library's default (30s)
}

// Sessions runs the sessions (engine.StreamJobs does).
type Sessions interface {
	RunExec(ctx context.Context, req engine.ExecStreamRequest) (int, error)
	RunAttach(ctx context.Context, req engine.AttachStreamRequest) error
	RunPortForward(ctx context.Context, req engine.PortForwardStreamRequest) error
}

// Server is a running streaming server.
type Server struct {
	lib  streaming.Server
	http *http.Server
	l    net.Listener
	url  string

	base   context.Context // cancelled by Stop: every session ends
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup    // running sessions
	tokens  map[string]wanted // by the token of its URL, until used
}

// wanted is what the client of an exec or attach session asked for. The
// WebSocket layer opens every channel whether asked for or not: a channel
// not asked for reads EOF at once and drops what is written to it, and
// taken for the client's stdin it would close a stdin_once container's
// stdin as soon as someone attached without stdin. The server remembers
// the request's streams by the token of its URL, and gives the session
// only those.
type wanted struct {
	stdin, stdout, stderr bool
	expires               time.Time
}

type wantedKey struct{}

// tokenTTL is how long a session's streams are remembered: longer than
// the library keeps its token (one minute).
const tokenTTL = 2 * time.Minute

// New listens on cfg.Address and builds the server; Serve serves it.
func New(ctx context.Context, cfg Config, sessions Sessions) (*Server, error) {
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("streaming server certificate: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	l, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	s := &Server{l: &trackingListener{Listener: l}, tokens: map[string]wanted{}}
	s.base, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	base := &url.URL{Scheme: scheme, Host: l.Addr().String()}
	s.url = base.String()
	lc := streaming.DefaultConfig
	lc.Addr = l.Addr().String()
	lc.BaseURL = base
	lc.TLSConfig = tlsConfig
	if cfg.IdleTimeout > 0 {
		lc.StreamIdleTimeout = cfg.IdleTimeout
	}
	if cfg.CreationTimeout > 0 {
		lc.StreamCreationTimeout = cfg.CreationTimeout
	}
	if s.lib, err = streaming.NewServer(lc, &adapter{s: s, sessions: sessions}); err != nil {
		l.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 30 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if t, ok := c.(*tls.Conn); ok {
				c = t.NetConn()
			}
			if tc, ok := c.(*trackedConn); ok {
				return context.WithValue(ctx, connKey{}, tc)
			}
			return ctx
		},
		ErrorLog: nil,
	}
	return s, nil
}

// URL is the server's base URL.
func (s *Server) URL() string { return s.url }

// Serve serves until Stop.
func (s *Server) Serve() error {
	var err error
	if s.http.TLSConfig != nil {
		err = s.http.ServeTLS(s.l, "", "")
	} else {
		err = s.http.Serve(s.l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Stop ends every session (their processes and containers are not
// touched: an exec'd process is killed with its session), stops listening
// and waits for the sessions to return, at most until ctx ends.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	err := s.http.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("streaming sessions still running: %w", ctx.Err())
	}
	return err
}

// GetExec returns the URL of an exec session (engine.StreamURLs).
func (s *Server) GetExec(r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	resp, err := s.lib.GetExec(r)
	if err != nil {
		return nil, err
	}
	if err := s.remember(resp.Url, wanted{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr}); err != nil {
		return nil, err
	}
	return resp, nil
}

// GetAttach returns the URL of an attach session.
func (s *Server) GetAttach(r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	resp, err := s.lib.GetAttach(r)
	if err != nil {
		return nil, err
	}
	if err := s.remember(resp.Url, wanted{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr}); err != nil {
		return nil, err
	}
	return resp, nil
}

// remember keeps the streams a session's client asked for until its URL
// is used (or it expires).
func (s *Server) remember(rawURL string, w wanted) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("streaming URL %s: %w", rawURL, err)
	}
	now := time.Now()
	w.expires = now.Add(tokenTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, o := range s.tokens {
		if now.After(o.expires) {
			delete(s.tokens, tok)
		}
	}
	s.tokens[path.Base(u.Path)] = w
	return nil
}

// serveHTTP serves the library's endpoints, passing the streams the
// session's client asked for to the adapter in the request's context.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	tok := path.Base(r.URL.Path)
	s.mu.Lock()
	want, ok := s.tokens[tok]
	delete(s.tokens, tok)
	s.mu.Unlock()
	if ok {
		r = r.WithContext(context.WithValue(r.Context(), wantedKey{}, want))
	}
	s.lib.ServeHTTP(w, r)
}

// GetPortForward returns the URL of a port-forward session.
func (s *Server) GetPortForward(r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return s.lib.GetPortForward(r)
}

// session derives the context of a session: it ends when the client's
// connection does (when ctx knows it), when the server stops, or when the
// session returns.
func (s *Server) session(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stopBase := context.AfterFunc(s.base, cancel)
	stopConn := func() bool { return true }
	if tc, ok := ctx.Value(connKey{}).(*trackedConn); ok {
		stopConn = afterClose(tc, cancel)
	}
	s.mu.Lock()
	counted := !s.stopped
	if counted {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	return ctx, func() {
		stopBase()
		stopConn()
		cancel()
		if counted {
			s.wg.Done()
		}
	}
}

// adapter is the library's Runtime: it runs the sessions as jobs.
type adapter struct {
	s        *Server
	sessions Sessions
}

func (a *adapter) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool,
	resize <-chan remotecommand.TerminalSize) error {
	in, out, errw = onlyWanted(ctx, in, out, errw)
	ctx, done := a.s.session(ctx)
	defer done()
	code, err := a.sessions.RunExec(ctx, engine.ExecStreamRequest{ID: id, Cmd: cmd, StreamIO: streamIO(ctx, in, out, errw, tty, resize)})
	if err != nil {
		log.G(ctx).WithError(err).WithField(log.FieldContainerID, id).Debug("exec session failed")
		return err
	}
	if code != 0 {
		// The library reports an exec.ExitError as the exit code.
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

func (a *adapter) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool,
	resize <-chan remotecommand.TerminalSize) error {
	in, out, errw = onlyWanted(ctx, in, out, errw)
	ctx, done := a.s.session(ctx)
	defer done()
	return a.sessions.RunAttach(ctx, engine.AttachStreamRequest{ID: id, StreamIO: streamIO(ctx, in, out, errw, tty, resize)})
}

func (a *adapter) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	ctx, done := a.s.session(ctx)
	defer done()
	return a.sessions.RunPortForward(ctx, engine.PortForwardStreamRequest{PodID: podID, Port: port, Stream: stream})
}

// onlyWanted drops the streams the session's client did not ask for (see
// wanted).
func onlyWanted(ctx context.Context, in io.Reader, out, errw io.WriteCloser) (io.Reader, io.WriteCloser, io.WriteCloser) {
	w, ok := ctx.Value(wantedKey{}).(wanted)
	if !ok {
		return in, out, errw
	}
	if !w.stdin {
		in = nil
	}
	if !w.stdout {
		out = nil
	}
	if !w.stderr {
		errw = nil
	}
	return in, out, errw
}

// streamIO turns the library's streams into the engine's, leaving nil
// what the client did not ask for.
func streamIO(ctx context.Context, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) engine.StreamIO {
	sio := engine.StreamIO{Tty: tty}
	if in != nil {
		sio.Stdin = in
	}
	if out != nil {
		sio.Stdout = out
	}
	if errw != nil {
		sio.Stderr = errw
	}
	if resize != nil {
		sizes := make(chan engine.TermSize)
		sio.Resize = sizes
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz, ok := <-resize:
					if !ok {
						return
					}
					select {
					case sizes <- engine.TermSize{Width: sz.Width, Height: sz.Height}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	return sio
}
