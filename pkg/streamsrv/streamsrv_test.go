package streamsrv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
)

// fakeSessions runs exec sessions in the test: it writes the command to
// stdout and exits with code; with block it waits for its context.
type fakeSessions struct {
	code    int
	block   bool
	started chan struct{}
	ended   chan error
	attach  chan engine.StreamIO // the streams of each attach, when set
}

func (f *fakeSessions) RunExec(ctx context.Context, req engine.ExecStreamRequest) (int, error) {
	io.WriteString(req.Stdout, strings.Join(req.Cmd, " "))
	if f.block {
		f.started <- struct{}{}
		<-ctx.Done()
		f.ended <- ctx.Err()
		return 0, ctx.Err()
	}
	return f.code, nil
}

func (f *fakeSessions) RunAttach(ctx context.Context, req engine.AttachStreamRequest) error {
	if f.attach != nil {
		f.attach <- req.StreamIO
	}
	return nil
}

func (f *fakeSessions) RunPortForward(ctx context.Context, req engine.PortForwardStreamRequest) error {
	return nil
}

func start(t *testing.T, f *fakeSessions) *Server {
	s, err := New(context.Background(), Config{Address: "127.0.0.1:0", IdleTimeout: time.Minute}, f)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

func execute(t *testing.T, s *Server, ctx context.Context, out io.Writer) error {
	r, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"echo", "hi"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Url, s.URL()+"/exec/") {
		t.Fatalf("URL %s, server %s", r.Url, s.URL())
	}
	u, _ := url.Parse(r.Url)
	e, err := remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	return e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: out})
}

// TestExitCode: a non-zero exit reaches the client as an exit, not an
// error of the runtime.
func TestExitCode(t *testing.T) {
	for _, code := range []int{0, 3} {
		s := start(t, &fakeSessions{code: code})
		var out bytes.Buffer
		err := execute(t, s, context.Background(), &out)
		var ee utilexec.ExitError
		switch {
		case code == 0 && err != nil:
			t.Errorf("exit 0: %v", err)
		case code != 0 && (!errors.As(err, &ee) || ee.ExitStatus() != code):
			t.Errorf("exit %d: %v", code, err)
		}
		if out.String() != "echo hi" {
			t.Errorf("stdout %q", out.String())
		}
	}
}

// TestClientGoneEndsSession: a silent session ends when its client's
// connection does (nothing else would tell it: the connection is hijacked).
func TestClientGoneEndsSession(t *testing.T) {
	f := &fakeSessions{block: true, started: make(chan struct{}, 1), ended: make(chan error, 1)}
	s := start(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- execute(t, s, ctx, io.Discard) }()
	<-f.started
	cancel()
	select {
	case err := <-f.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("session ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the session goes on after its client went away")
	}
	<-done
}

// TestStopEndsSessions: stopping the server ends running sessions and
// waits for them.
func TestStopEndsSessions(t *testing.T) {
	f := &fakeSessions{block: true, started: make(chan struct{}, 1), ended: make(chan error, 1)}
	s := start(t, f)
	done := make(chan error, 1)
	go func() { done <- execute(t, s, context.Background(), io.Discard) }()
	<-f.started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.ended:
	default:
		t.Fatal("Stop returned before the session ended")
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the client's stream did not end")
	}
}

// TestOnlyWantedStreams: a session gets only the streams its request asked
// for, on either transport. WebSocket opens every channel; one not asked
// for reads EOF at once, and taken for stdin it closed the stdin of a
// stdin_once container as soon as anyone attached without stdin.
func TestOnlyWantedStreams(t *testing.T) {
	f := &fakeSessions{attach: make(chan engine.StreamIO, 1)}
	s := start(t, f)
	for _, tr := range []string{"spdy", "websocket"} {
		for _, req := range []*runtimeapi.AttachRequest{
			{ContainerId: "c1", Stdout: true},
			{ContainerId: "c1", Stderr: true},
			{ContainerId: "c1", Stdin: true, Stdout: true, Stderr: true},
		} {
			r, err := s.GetAttach(req)
			if err != nil {
				t.Fatal(err)
			}
			var e remotecommand.Executor
			if tr == "websocket" {
				e, err = remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{}, "GET", r.Url, "v4.channel.k8s.io")
			} else {
				u, _ := url.Parse(r.Url)
				e, err = remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
			}
			if err != nil {
				t.Fatal(err)
			}
			opts := remotecommand.StreamOptions{}
			if req.Stdin {
				opts.Stdin = strings.NewReader("")
			}
			if req.Stdout {
				opts.Stdout = io.Discard
			}
			if req.Stderr {
				opts.Stderr = io.Discard
			}
			if err := e.StreamWithContext(context.Background(), opts); err != nil {
				t.Fatalf("%s %v: %v", tr, req, err)
			}
			select {
			case sio := <-f.attach:
				if (sio.Stdin != nil) != req.Stdin || (sio.Stdout != nil) != req.Stdout || (sio.Stderr != nil) != req.Stderr {
					t.Errorf("%s: request %v, session's streams: stdin %v stdout %v stderr %v", tr, req,
						sio.Stdin != nil, sio.Stdout != nil, sio.Stderr != nil)
				}
			default:
				t.Fatalf("%s %v: no attach session", tr, req)
			}
		}
	}
}
