// Package monitor is the per-pod monitor: a small process, not a child of
// the daemon, that creates the pod's containers through an execdrv driver
// and so becomes their parent and subreaper. It holds their stdio, writes
// their CRI logs, runs ExecSync, and records each exit (code, signal, OOM
// kill, time) to a file, so a restarted daemon finds containers running
// and learns the exits it missed.
//
// The daemon talks to it over a unix socket in the pod's state directory:
// one JSON request and one JSON response per connection; an "events"
// request keeps its connection and receives one JSON Event per line.
package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Ops.
const (
	OpCreate    = "create"
	OpStart     = "start"
	OpKill      = "kill"
	OpDelete    = "delete"
	OpExecSync  = "exec_sync"
	OpReopenLog = "reopen_log"
	OpState     = "state"
	OpEvents    = "events"
	OpShutdown  = "shutdown"
	OpUpdate    = "update"
)

// Request is one call.
type Request struct {
	Op        string                `json:"op"`
	ID        string                `json:"id,omitempty"`
	Bundle    string                `json:"bundle,omitempty"`
	LogPath   string                `json:"logPath,omitempty"`
	Stdin     bool                  `json:"stdin,omitempty"`
	StdinOnce bool                  `json:"stdinOnce,omitempty"`
	Tty       bool                  `json:"tty,omitempty"`
	Signal    int                   `json:"signal,omitempty"`
	All       bool                  `json:"all,omitempty"`
	Force     bool                  `json:"force,omitempty"`
	Process   *specs.Process        `json:"process,omitempty"`
	Timeout   time.Duration         `json:"timeout,omitempty"`
	Resources *specs.LinuxResources `json:"resources,omitempty"`
}

// Response is one answer.
type Response struct {
	Error *errdefs.Wire `json:"error,omitempty"`
	Pid   int           `json:"pid,omitempty"`
	// ExecSync
	Stdout    []byte `json:"stdout,omitempty"`
	Stderr    []byte `json:"stderr,omitempty"`
	ExitCode  int    `json:"exitCode,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	// State
	Containers []ContainerState `json:"containers,omitempty"`
	MonitorPid int              `json:"monitorPid,omitempty"`
}

// ContainerState is what the monitor knows of one container.
type ContainerState struct {
	ID     string      `json:"id"`
	Pid    int         `json:"pid"`
	Exited *ExitRecord `json:"exited,omitempty"`
}

// ExitRecord is written to <ctr dir>/exit.json when a container's init exits.
type ExitRecord struct {
	Exit
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// Event tells the daemon a container exited.
type Event struct {
	ID   string     `json:"id"`
	Exit ExitRecord `json:"exit"`
}

// maxMessage caps a request or response (ExecSync output is capped below it).
const maxMessage = 64 << 20

// Client calls a pod's monitor.
type Client struct {
	Socket string
}

// Call sends req and returns the response; the error is typed.
func (c *Client) Call(ctx context.Context, req *Request) (*Response, error) {
	conn, err := dialUnix(c.Socket)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: %v: %w", c.Socket, err, errdefs.ErrUnavailable)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("monitor %s: %v: %w", req.Op, ctxOr(ctx, err), errdefs.ErrUnavailable)
	}
	var resp Response
	dec := json.NewDecoder(bufio.NewReaderSize(conn, 64<<10))
	if err := dec.Decode(&resp); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("monitor %s: %v: %w", req.Op, err, errdefs.ErrUnavailable)
	}
	if resp.Error != nil {
		return &resp, resp.Error.Err()
	}
	return &resp, nil
}

func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Events connects to the monitor's event stream; fn gets each event until
// the connection ends or ctx is done.
func (c *Client) Events(ctx context.Context, fn func(Event)) error {
	conn, err := dialUnix(c.Socket)
	if err != nil {
		return fmt.Errorf("monitor %s: %v: %w", c.Socket, err, errdefs.ErrUnavailable)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(&Request{Op: OpEvents}); err != nil {
		return err
	}
	dec := json.NewDecoder(conn)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("monitor events: %v: %w", err, errdefs.ErrUnavailable)
		}
		fn(ev)
	}
}
