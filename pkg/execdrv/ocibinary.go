package execdrv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"golang.org/x/sys/unix"
)

// OCIBinary runs containers with an external runc-compatible runtime.
type OCIBinary struct {
	// Binary is the runtime's path, Args come before the global flags
	// (e.g. {"oci"} for `shim oci`).
	Binary string
	Args   []string
	// Root is the runtime's --root state directory.
	Root string
	// Timeout bounds each runtime invocation (default 60s).
	Timeout time.Duration
}

// NewOCIBinary returns a driver running binary with state under root.
func NewOCIBinary(binary, root string, args ...string) *OCIBinary {
	return &OCIBinary{Binary: binary, Args: args, Root: root}
}

// Name implements Driver.
func (o *OCIBinary) Name() string { return "oci-binary:" + filepath.Base(o.Binary) }

type runOpts struct {
	io       IO
	stdinBuf []byte
	stdout   *bytes.Buffer
}

// run runs the runtime with a JSON log, and turns a failure into an error
// carrying the runtime's last logged error message. The class is not
// known across the process boundary of an external runtime, except that
// a missing container is checked with state first by the callers that
// need it.
func (o *OCIBinary) run(ctx context.Context, ro runOpts, args ...string) error {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logf, err := os.CreateTemp("", "ocibinary-log-*.json")
	if err != nil {
		return err
	}
	logf.Close()
	defer os.Remove(logf.Name())
	full := append(append([]string(nil), o.Args...), "--root", o.Root, "--log", logf.Name(), "--log-format", "json")
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, o.Binary, full...)
	// Never a pipe for stderr: a container init inherits it and Wait
	// would block until the container exits.
	errf, err := os.CreateTemp("", "ocibinary-stderr-*")
	if err != nil {
		return err
	}
	defer os.Remove(errf.Name())
	defer errf.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, errf
	if ro.io.Stdin != nil {
		cmd.Stdin = ro.io.Stdin
	} else if ro.stdinBuf != nil {
		cmd.Stdin = bytes.NewReader(ro.stdinBuf)
	}
	if ro.io.Stdout != nil {
		cmd.Stdout = ro.io.Stdout
	} else if ro.stdout != nil {
		cmd.Stdout = ro.stdout
	}
	if ro.io.Stderr != nil {
		cmd.Stderr = ro.io.Stderr
	}
	if err := cmd.Run(); err != nil {
		msg := lastLogError(logf.Name())
		if msg == "" {
			b := make([]byte, 4096)
			n, _ := errf.ReadAt(b, 0)
			msg = strings.TrimSpace(string(b[:n]))
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", o.Binary, args[0], ctx.Err())
		}
		return fmt.Errorf("%s %s: %v: %s: %w", o.Binary, args[0], err, msg, errdefs.ErrUnavailable)
	}
	return nil
}

// lastLogError returns the message of the last error-level line of a
// runc-style JSON log (capped read), followed by the first fatal one when
// there is one: runc's C stage logs the cause as fatal ("nsexec: failed to
// update /proc/self/oom_score_adj") and its Go side then only says "can't
// get final child's PID from pipe: EOF".
func lastLogError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last, fatal string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 64<<10)
	for s.Scan() {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(s.Bytes(), &e) != nil {
			continue
		}
		switch e.Level {
		case "fatal":
			if fatal == "" {
				fatal = e.Msg
			}
			last = e.Msg
		case "error":
			last = e.Msg
		}
	}
	if fatal != "" && fatal != last {
		return last + " (" + fatal + ")"
	}
	return last
}

// exists maps a missing container to ErrNotFound, using the runtime's
// state output rather than its error text.
func (o *OCIBinary) exists(ctx context.Context, id string) error {
	if _, err := o.State(ctx, id); err != nil {
		return err
	}
	return nil
}

// Create implements Driver.
func (o *OCIBinary) Create(ctx context.Context, id, bundle string, opts CreateOpts) (int, error) {
	if err := libct.ValidateID(id); err != nil {
		return 0, err
	}
	pidFile := filepath.Join(bundle, ".init.pid."+id)
	defer os.Remove(pidFile)
	args := []string{"create", "--bundle", bundle, "--pid-file", pidFile}
	if opts.ConsoleSocket != "" {
		args = append(args, "--console-socket", opts.ConsoleSocket)
	}
	if opts.NoPivot {
		args = append(args, "--no-pivot")
	}
	if err := o.run(ctx, runOpts{io: opts.IO}, append(args, id)...); err != nil {
		return 0, err
	}
	return readPid(pidFile)
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid file: %w: %w", err, errdefs.ErrInternal)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pid file: %w: %w", err, errdefs.ErrInternal)
	}
	return pid, nil
}

// Start implements Driver.
func (o *OCIBinary) Start(ctx context.Context, id string) error {
	if err := o.exists(ctx, id); err != nil {
		return err
	}
	st, _ := o.State(ctx, id)
	if st.Status != StatusCreated {
		return fmt.Errorf("container %q is %s, not created: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	return o.run(ctx, runOpts{}, "start", id)
}

// State implements Driver.
func (o *OCIBinary) State(ctx context.Context, id string) (State, error) {
	if err := libct.ValidateID(id); err != nil {
		return State{}, err
	}
	var out bytes.Buffer
	if err := o.run(ctx, runOpts{stdout: &out}, "state", id); err != nil {
		// runc keeps a directory per container; no directory, no container.
		if _, serr := os.Stat(filepath.Join(o.Root, id)); os.IsNotExist(serr) {
			return State{}, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
		}
		return State{}, err
	}
	var s struct {
		ID          string            `json:"id"`
		Pid         int               `json:"pid"`
		Status      string            `json:"status"`
		Bundle      string            `json:"bundle"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		return State{}, fmt.Errorf("parse state: %w: %w", err, errdefs.ErrInternal)
	}
	return State{ID: s.ID, Pid: s.Pid, Status: Status(s.Status), Bundle: s.Bundle, Annotations: s.Annotations}, nil
}

// Kill implements Driver.
func (o *OCIBinary) Kill(ctx context.Context, id string, sig unix.Signal, all bool) error {
	st, err := o.State(ctx, id)
	if err != nil {
		return err
	}
	if st.Status == StatusStopped && !all {
		return fmt.Errorf("container %q is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	return o.run(ctx, runOpts{}, append(args, id, strconv.Itoa(int(sig)))...)
}

// Delete implements Driver.
func (o *OCIBinary) Delete(ctx context.Context, id string, force bool) error {
	st, err := o.State(ctx, id)
	if err != nil {
		return err
	}
	if !force && (st.Status == StatusRunning || st.Status == StatusPaused) {
		return fmt.Errorf("container %q is %s: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	return o.run(ctx, runOpts{}, append(args, id)...)
}

// Exec implements Driver.
func (o *OCIBinary) Exec(ctx context.Context, id string, p *specs.Process, io IO) (int, error) {
	st, err := o.State(ctx, id)
	if err != nil {
		return 0, err
	}
	if st.Status != StatusRunning && st.Status != StatusCreated {
		return 0, fmt.Errorf("container %q is %s: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	dir, err := os.MkdirTemp("", "ocibinary-exec-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	b, err := json.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("encode process: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	procFile, pidFile := filepath.Join(dir, "process.json"), filepath.Join(dir, "pid")
	if err := os.WriteFile(procFile, b, 0o600); err != nil {
		return 0, err
	}
	args := []string{"exec", "--process", procFile, "--detach", "--pid-file", pidFile}
	if io.ConsoleSocket != "" {
		args = append(args, "--console-socket", io.ConsoleSocket)
	}
	if err := o.run(ctx, runOpts{io: io}, append(args, id)...); err != nil {
		return 0, err
	}
	return readPid(pidFile)
}

// Pause implements Driver.
func (o *OCIBinary) Pause(ctx context.Context, id string) error {
	st, err := o.State(ctx, id)
	if err != nil {
		return err
	}
	if st.Status != StatusRunning && st.Status != StatusCreated {
		return fmt.Errorf("container %q is %s: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	return o.run(ctx, runOpts{}, "pause", id)
}

// Resume implements Driver.
func (o *OCIBinary) Resume(ctx context.Context, id string) error {
	st, err := o.State(ctx, id)
	if err != nil {
		return err
	}
	if st.Status != StatusPaused {
		return fmt.Errorf("container %q is %s, not paused: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	return o.run(ctx, runOpts{}, "resume", id)
}

// Update implements Driver.
func (o *OCIBinary) Update(ctx context.Context, id string, r *specs.LinuxResources) error {
	if err := o.exists(ctx, id); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode resources: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := o.run(ctx, runOpts{stdinBuf: b}, "update", "--resources", "-", id); err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Stats implements Driver, from `events --stats` (runc's JSON).
func (o *OCIBinary) Stats(ctx context.Context, id string) (*libct.Stats, error) {
	if err := o.exists(ctx, id); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := o.run(ctx, runOpts{stdout: &out}, "events", "--stats", id); err != nil {
		return nil, err
	}
	var ev struct {
		Data struct {
			CPU struct {
				Usage struct {
					Total, Kernel, User uint64
					Percpu              []uint64
				} `json:"usage"`
			} `json:"cpu"`
			Memory struct {
				Usage struct {
					Limit, Usage, Max, Failcnt uint64
				} `json:"usage"`
				Cache uint64 `json:"cache"`
			} `json:"memory"`
			Pids struct {
				Current, Limit uint64
			} `json:"pids"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
		return nil, fmt.Errorf("parse stats: %w: %w", err, errdefs.ErrInternal)
	}
	var s libct.Stats
	d := ev.Data
	s.CPU.UsageNanos, s.CPU.KernelNanos, s.CPU.UserNanos, s.CPU.PerCPU = d.CPU.Usage.Total, d.CPU.Usage.Kernel, d.CPU.Usage.User, d.CPU.Usage.Percpu
	s.Memory.Limit, s.Memory.Usage, s.Memory.MaxUsage, s.Memory.Failcnt, s.Memory.Cache = d.Memory.Usage.Limit, d.Memory.Usage.Usage, d.Memory.Usage.Max, d.Memory.Usage.Failcnt, d.Memory.Cache
	s.Pids.Current, s.Pids.Limit = d.Pids.Current, d.Pids.Limit
	return &s, nil
}

// Pids implements Driver.
func (o *OCIBinary) Pids(ctx context.Context, id string) ([]int, error) {
	if err := o.exists(ctx, id); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := o.run(ctx, runOpts{stdout: &out}, "ps", "--format", "json", id); err != nil {
		return nil, err
	}
	var pids []int
	if err := json.Unmarshal(out.Bytes(), &pids); err != nil {
		return nil, fmt.Errorf("parse ps: %w: %w", err, errdefs.ErrInternal)
	}
	return pids, nil
}
