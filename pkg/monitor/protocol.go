// Package monitor is the per-pod monitor: a small process, not a child of
// the daemon, that is the parent and subreaper of the pod's containers. It
// holds their stdio, writes their CRI logs, runs ExecSync, and records each
// exit (code, signal, OOM kill, time) to a file, so a restarted daemon
// finds containers running and learns the exits it missed.
//
// The monitor itself is C (package cmon), so that it costs a pod a few
// hundred KB. It starts containers' inits and exec'd processes itself
// from the templates libct writes (a direct create, a direct exec); the
// other container operations, which need pkg/libct or an OCI runtime, run
// in a short-lived Go helper it starts (HelperMain). This
// package is the Go side: Spawn, the Client, the protocol types and the
// helper.
//
// The daemon talks to it over a unix socket in the pod's state directory:
// one JSON request line and one JSON response line per connection; an
// "events" request keeps its connection and receives one JSON Event per
// line.
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
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
	// OpExec starts a process whose stdio the caller holds: the reply
	// carries its fds (SCM_RIGHTS), then an ExitCode line when it exits.
	// Closing the connection before kills the process. See Client.Exec.
	OpExec = "exec"
	// OpAttach keeps the connection and sends the container's output to
	// it in frames until the container exits. See Client.Attach.
	OpAttach = "attach"
	// OpCloseStdin closes the container's stdin (stdin_once).
	OpCloseStdin = "close_stdin"
	// OpInfra: infra.go.
)

// Ops lists every op the monitor serves; the C monitor's names
// (cmon/protocol.h) are generated from it.
var Ops = []string{OpCreate, OpStart, OpKill, OpDelete, OpExecSync, OpReopenLog, OpState, OpEvents, OpShutdown,
	OpUpdate, OpExec, OpAttach, OpCloseStdin, OpInfra}

// helperOpExec is the helper op that starts a process in a container (for
// ExecSync and Exec); the others have the names of the monitor ops they
// serve.
const helperOpExec = "exec"

// helperOps lists the ops of `monitor-helper --op`.
var helperOps = []string{OpCreate, OpStart, OpKill, OpDelete, helperOpExec, OpUpdate}

// Attach output: frames of a FrameHeader-byte header (the stream, then
// the length of the data as a big-endian uint32) and the data.
const (
	FrameStdout = 1
	FrameStderr = 2
	FrameHeader = 5
)

// Request is one call.
type Request struct {
	Op      string `json:"op"`
	ID      string `json:"id,omitempty"`
	Bundle  string `json:"bundle,omitempty"`
	LogPath string `json:"logPath,omitempty"`
	// Stdin: create gives the container a stdin pipe; exec and attach
	// want the process's stdin.
	Stdin     bool `json:"stdin,omitempty"`
	StdinOnce bool `json:"stdinOnce,omitempty"`
	Tty       bool `json:"tty,omitempty"`
	// Direct: create starts the init itself from the create template
	// of libct.PrepareCreate, not through a helper (no terminal); a
	// monitor that cannot answers not_implemented.
	Direct bool `json:"direct,omitempty"`
	// Stdout and Stderr: the streams an attach wants.
	Stdout    bool                  `json:"stdout,omitempty"`
	Stderr    bool                  `json:"stderr,omitempty"`
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
	// Create and start: HelperNs is the helper's time as the monitor saw
	// it, from its fork (or, parked, its resume) to its result; OpNs the
	// operation's share of it (libct or the OCI runtime), as the helper
	// measured it. Zero from a monitor that does not report them.
	HelperNs int64 `json:"helperNs,omitempty"`
	OpNs     int64 `json:"opNs,omitempty"`
	// ExecSync
	Stdout    []byte `json:"stdout,omitempty"`
	Stderr    []byte `json:"stderr,omitempty"`
	ExitCode  int    `json:"exitCode,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	// State
	Containers []ContainerState `json:"containers,omitempty"`
	MonitorPid int              `json:"monitorPid,omitempty"`
	// Direct: the monitor serves Request.Direct (state).
	Direct bool `json:"direct,omitempty"`
	// CInit: the inits this monitor starts run the C init's plans (state;
	// a monitor of an older binary runs an older init binary).
	CInit bool `json:"cinit,omitempty"`
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

// SocketName is the monitor's socket in the pod directory.
const SocketName = "monitor.sock"

// ExitFile is written in a container's bundle when its init exits.
const ExitFile = "exit.json"

// Limits of the C monitor (pkg/monitor/cmon: exec.c, crilog.c, conn.c).
const (
	maxExecOutput = 16 << 20 // each stream of ExecSync output
	maxLogLine    = 16 << 10 // longer lines are split into partial records
	maxRequest    = 8 << 20  // one request line
)

// Exit is how a process ended.
type Exit struct {
	Pid      int  `json:"pid"`
	Code     int  `json:"code"` // exit code, or 128+signal
	Signaled bool `json:"signaled,omitempty"`
	Signal   int  `json:"signal,omitempty"`
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
		return nil, fmt.Errorf("exit record %s: %w: %w", bundle, err, errdefs.ErrDataLoss)
	}
	return &rec, nil
}

// Client calls a pod's monitor.
type Client struct {
	Socket string
	// direct: the monitor serves Request.Direct (one this binary spawned,
	// or one whose state response said so), until it answers a direct
	// create with not_implemented.
	direct atomic.Bool
	// cinit: the monitor's inits run the C init's plans (one this binary
	// spawned, or one whose state response said so).
	cinit atomic.Bool
}

// Direct reports whether the monitor serves Request.Direct.
func (c *Client) Direct() bool { return c.direct.Load() }

// SetDirect records whether the monitor serves Request.Direct.
func (c *Client) SetDirect(v bool) { c.direct.Store(v) }

// CInit reports whether the monitor's inits run the C init's plans.
func (c *Client) CInit() bool { return c.cinit.Load() }

// SetState records what the monitor's state response says it can do.
func (c *Client) SetState(st *Response) {
	c.direct.Store(st.Direct)
	c.cinit.Store(st.CInit)
}

// Call sends req and returns the response; the error is typed.
func (c *Client) Call(ctx context.Context, req *Request) (*Response, error) {
	conn, err := dialUnix(c.Socket)
	if err != nil {
		return nil, dialError(c.Socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("monitor %s: %w: %w", req.Op, err, errdefs.ErrUnavailable)
	}
	var resp Response
	// The decoder buffers (and grows its buffer for a big ExecSync
	// output); a reader of its own per call was 64 KiB of garbage.
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("monitor %s: %w: %w", req.Op, err, errdefs.ErrUnavailable)
	}
	if resp.Error != nil {
		return &resp, resp.Error.Err()
	}
	return &resp, nil
}

// ErrGone marks a monitor that is not running: nothing listens on its
// socket (refused), or the socket is gone. A slow monitor is not gone.
var ErrGone = errors.New("monitor is not running")

// IsGone reports whether err says the monitor is not running.
func IsGone(err error) bool { return errors.Is(err, ErrGone) }

func dialError(socket string, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("monitor %s: %w: %w: %w", socket, err, ErrGone, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("monitor %s: %w: %w", socket, err, errdefs.ErrUnavailable)
}

// Events connects to the monitor's event stream; fn gets each event until
// the connection ends or ctx is done.
func (c *Client) Events(ctx context.Context, fn func(Event)) error {
	conn, err := dialUnix(c.Socket)
	if err != nil {
		return dialError(c.Socket, err)
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
			return fmt.Errorf("monitor events: %w: %w", err, errdefs.ErrUnavailable)
		}
		fn(ev)
	}
}
