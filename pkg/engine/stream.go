package engine

import (
	"context"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// Streaming: the CRI calls Exec, Attach and PortForward run a short job
// ("exec", "attach", "port_forward") that checks the target and returns a
// URL of the streaming server (StreamURLs); the server calls back for the
// session, which runs as a job for as long as it lasts ("exec_stream",
// "attach_stream", "port_forward_stream"). The bytes of an exec never go
// through the pod's monitor (it hands over the process's stdio); attach
// goes through it (it holds the container's stdio and writes the log);
// port-forward dials inside the pod's network namespace.

// StreamURLs makes the URLs of streaming sessions (the streaming server).
type StreamURLs interface {
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
}

// TermSize is a terminal's size.
type TermSize struct{ Width, Height uint16 }

// StreamIO is the client's side of a session: what it did not ask for is
// nil.
type StreamIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Tty            bool
	Resize         <-chan TermSize
}

// ExecStreamRequest runs Cmd in container ID with the client's stdio.
type ExecStreamRequest struct {
	ID  string
	Cmd []string
	StreamIO
}

// AttachStreamRequest attaches the client to container ID.
type AttachStreamRequest struct {
	ID string
	StreamIO
}

// PortForwardStreamRequest connects Stream to Port of pod PodID.
type PortForwardStreamRequest struct {
	PodID  string
	Port   int32
	Stream io.ReadWriteCloser
}

// StreamJobs are the streaming jobs.
type StreamJobs struct {
	Exec        *Handler[*runtimeapi.ExecRequest, *runtimeapi.ExecResponse]
	Attach      *Handler[*runtimeapi.AttachRequest, *runtimeapi.AttachResponse]
	PortForward *Handler[*runtimeapi.PortForwardRequest, *runtimeapi.PortForwardResponse]

	ExecStream        *Handler[ExecStreamRequest, int]
	AttachStream      *Handler[AttachStreamRequest, struct{}]
	PortForwardStream *Handler[PortForwardStreamRequest, struct{}]

	urls StreamURLs
}

// RegisterStreams registers the streaming jobs of r on e; SetURLs must be
// called before the CRI calls are served.
func RegisterStreams(e *Engine, r *Runtime) *StreamJobs {
	s := &StreamJobs{}
	s.Exec = Register(e, "exec", Spec[*runtimeapi.ExecRequest, *runtimeapi.ExecResponse]{
		Args: func(q *runtimeapi.ExecRequest) map[string]string {
			return map[string]string{log.FieldContainerID: q.GetContainerId(), "tty": fmt.Sprint(q.GetTty())}
		},
		Run: func(ctx context.Context, _ *Job, q *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
			q, err := r.checkExec(ctx, q)
			if err != nil {
				return nil, err
			}
			return s.urls.GetExec(q)
		},
	})
	s.Attach = Register(e, "attach", Spec[*runtimeapi.AttachRequest, *runtimeapi.AttachResponse]{
		Args: func(q *runtimeapi.AttachRequest) map[string]string {
			return one(log.FieldContainerID, q.GetContainerId())
		},
		Run: func(ctx context.Context, _ *Job, q *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
			q, err := r.checkAttach(ctx, q)
			if err != nil {
				return nil, err
			}
			return s.urls.GetAttach(q)
		},
	})
	s.PortForward = Register(e, "port_forward", Spec[*runtimeapi.PortForwardRequest, *runtimeapi.PortForwardResponse]{
		Args: func(q *runtimeapi.PortForwardRequest) map[string]string {
			return one(log.FieldPodID, q.GetPodSandboxId())
		},
		Run: func(ctx context.Context, _ *Job, q *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
			sb, err := r.readySandbox(q.GetPodSandboxId())
			if err != nil {
				return nil, err
			}
			q = proto.CloneOf(q)
			q.PodSandboxId = sb.ID
			return s.urls.GetPortForward(q)
		},
	})
	s.ExecStream = Register(e, "exec_stream", Spec[ExecStreamRequest, int]{
		Args: func(q ExecStreamRequest) map[string]string {
			return map[string]string{log.FieldContainerID: q.ID, "tty": fmt.Sprint(q.Tty), "stdin": fmt.Sprint(q.Stdin != nil)}
		},
		Run: r.execStream,
	})
	s.AttachStream = Register(e, "attach_stream", Spec[AttachStreamRequest, struct{}]{
		Args: func(q AttachStreamRequest) map[string]string {
			return map[string]string{log.FieldContainerID: q.ID, "tty": fmt.Sprint(q.Tty), "stdin": fmt.Sprint(q.Stdin != nil)}
		},
		Run: r.attachStream,
	})
	s.PortForwardStream = Register(e, "port_forward_stream", Spec[PortForwardStreamRequest, struct{}]{
		Args: func(q PortForwardStreamRequest) map[string]string {
			return map[string]string{log.FieldPodID: q.PodID, "port": fmt.Sprint(q.Port)}
		},
		Run: r.portForwardStream,
	})
	return s
}

// SetURLs sets the streaming server that makes the sessions' URLs.
func (s *StreamJobs) SetURLs(u StreamURLs) { s.urls = u }

// runningContainer returns container id when it is running.
func (r *Runtime) runningContainer(ctx context.Context, id string) (*Container, error) {
	c, err := r.getContainer(id)
	if err != nil {
		return nil, err
	}
	r.refresh(ctx, c)
	if st := c.view().State; st != ContainerRunning {
		return nil, fmt.Errorf("container %s is %s, not running: %w", c.ID, strings.ToLower(st), errdefs.ErrFailedPrecondition)
	}
	return c, nil
}

func (r *Runtime) readySandbox(id string) (*Sandbox, error) {
	sb, err := r.getSandbox(id)
	if err != nil {
		return nil, err
	}
	if st := sb.view().State; st != SandboxReady {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	return sb, nil
}

func (r *Runtime) checkExec(ctx context.Context, q *runtimeapi.ExecRequest) (*runtimeapi.ExecRequest, error) {
	if len(q.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec without a command: %w", errdefs.ErrInvalidArgument)
	}
	c, err := r.runningContainer(ctx, q.GetContainerId())
	if err != nil {
		return nil, err
	}
	q = proto.CloneOf(q)
	q.ContainerId = c.ID
	return q, nil
}

func (r *Runtime) checkAttach(ctx context.Context, q *runtimeapi.AttachRequest) (*runtimeapi.AttachRequest, error) {
	c, err := r.runningContainer(ctx, q.GetContainerId())
	if err != nil {
		return nil, err
	}
	if q.GetTty() != c.view().config.GetTty() {
		return nil, fmt.Errorf("attach with tty %v to container %s created with tty %v: %w",
			q.GetTty(), c.ID, c.view().config.GetTty(), errdefs.ErrInvalidArgument)
	}
	q = proto.CloneOf(q)
	q.ContainerId = c.ID
	return q, nil
}

// RunExec runs an exec session (for the streaming server).
func (s *StreamJobs) RunExec(ctx context.Context, req ExecStreamRequest) (int, error) {
	return s.ExecStream.Run(ctx, req)
}

// RunAttach runs an attach session.
func (s *StreamJobs) RunAttach(ctx context.Context, req AttachStreamRequest) error {
	_, err := s.AttachStream.Run(ctx, req)
	return err
}

// RunPortForward runs one forwarded connection.
func (s *StreamJobs) RunPortForward(ctx context.Context, req PortForwardStreamRequest) error {
	_, err := s.PortForwardStream.Run(ctx, req)
	return err
}
