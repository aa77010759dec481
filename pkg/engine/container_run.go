package engine

// Container start, stop and kill: a created container starts through its
// pod's monitor; a stop sends the stop signal, waits, then kills every
// process.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/monitor"
)

func (r *Runtime) startContainer(ctx context.Context, j *Job, id string) (struct{}, error) {
	c, err := r.getContainer(id)
	if err != nil {
		return struct{}{}, err
	}
	r.refresh(ctx, c)
	if st := c.view().State; st != ContainerCreated {
		return struct{}{}, fmt.Errorf("container %s is %s, not created: %w", c.ID, st, errdefs.ErrFailedPrecondition)
	}
	mon, err := r.monitorOf(c)
	if err != nil {
		return struct{}{}, err
	}
	j.Mark(phaseValidate)
	c.mu.Lock()
	c.starting = true
	c.mu.Unlock()
	defer r.startEnded(c)
	resp, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpStart, ID: c.ID})
	if err != nil {
		// The start may have happened before the call failed (a deadline,
		// a reset): ask the runtime what the container is doing.
		if !r.started(ctx, c) {
			return struct{}{}, fmt.Errorf("starting container: %w", err)
		}
	}
	markMonitorCall(j, resp, phaseLibctStart)
	if err := r.updateContainer(c, func(c *Container) {
		if c.State == ContainerCreated {
			c.State = ContainerRunning
		}
		if c.StartedAt.IsZero() {
			c.StartedAt = time.Now()
		}
	}); err != nil {
		return struct{}{}, err
	}
	j.Mark(phaseRecord)
	c.mu.Lock()
	removed := c.removed // by a pod's removal meanwhile: it announced the end
	c.mu.Unlock()
	if !removed {
		r.emit(c, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	}
	r.startEnded(c)
	r.refresh(ctx, c) // it may have exited already
	j.Mark(phaseRefresh)
	c.mu.Lock()
	c.started = j.Timeline()
	c.mu.Unlock()
	j.Logf("started")
	return struct{}{}, nil
}

// startEnded ends c's start: an exit recorded while it ran is announced
// now, after CONTAINER_STARTED (a process that exits at once must not be
// seen stopped before started). A removal during the start (a pod's,
// which does not wait for the container's jobs) ends it too, before
// CONTAINER_DELETED. Idempotent.
func (r *Runtime) startEnded(c *Container) {
	c.mu.Lock()
	pending := c.stopPending
	c.starting, c.stopPending = false, false
	c.mu.Unlock()
	if pending {
		r.emit(c, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}
}

// started reports whether the runtime shows c running or already exited
// after a start.
func (r *Runtime) started(ctx context.Context, c *Container) bool {
	drv, err := r.podDriver(c.SandboxID)
	if err != nil {
		return false
	}
	st, err := drv.State(ctx, c.ID)
	return err == nil && (st.Status == execdrv.StatusRunning || st.Status == execdrv.StatusStopped)
}

// StopContainerRequest asks to stop a container within Timeout.
type StopContainerRequest struct {
	ID      string
	Timeout time.Duration
}

func (r *Runtime) stopContainer(ctx context.Context, j *Job, req StopContainerRequest) (struct{}, error) {
	c, err := r.getContainer(req.ID)
	if errdefs.IsNotFound(err) {
		return struct{}{}, nil
	}
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.killContainer(ctx, c, req.Timeout)
}

// killContainer sends the stop signal, waits up to timeout, then kills
// every process of the container and waits for the exit.
func (r *Runtime) killContainer(ctx context.Context, c *Container, timeout time.Duration) error {
	r.refresh(ctx, c)
	v := c.view()
	if v.State != ContainerRunning && v.State != ContainerCreated {
		return nil
	}
	mon, err := r.monitorOf(c)
	if err == nil {
		err = r.killThrough(ctx, mon, c, v.State, v.StopSignal, timeout)
	}
	if err != nil && (mon == nil || monitor.IsGone(err)) {
		// No monitor: kill through the runtime and record the exit.
		r.monitorGone(ctx, c.SandboxID)
		return nil
	}
	return err
}

func (r *Runtime) killThrough(ctx context.Context, mon *monitor.Client, c *Container, state, stopSig string, timeout time.Duration) error {
	if timeout > 0 && state == ContainerRunning {
		sig := stopSignal(stopSig)
		if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpKill, ID: c.ID, Signal: int(sig)}); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		if r.waitExited(ctx, c, timeout) {
			return nil
		}
	}
	if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpKill, ID: c.ID, Signal: int(unix.SIGKILL), All: true}); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if !r.waitExited(ctx, c, 30*time.Second) {
		return fmt.Errorf("container %s did not exit after SIGKILL: %w", c.ID, errdefs.ErrUnavailable)
	}
	return nil
}

// waitExited waits until the container is recorded exited.
func (r *Runtime) waitExited(ctx context.Context, c *Container, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		r.refresh(ctx, c)
		if c.view().State == ContainerExited {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(delay)
	}
}

func stopSignal(s string) unix.Signal {
	if s == "" {
		return unix.SIGTERM
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig
	}
	// Real-time signals: RTMIN+n, RTMAX-n (systemd images stop on RTMIN+3).
	var n int
	if _, err := fmt.Sscanf(name, "RTMIN+%d", &n); err == nil && n >= 0 && 34+n <= 64 {
		return unix.Signal(34 + n)
	}
	if _, err := fmt.Sscanf(name, "RTMAX-%d", &n); err == nil && n >= 0 && 64-n >= 34 {
		return unix.Signal(64 - n)
	}
	switch name {
	case "RTMIN":
		return unix.Signal(34)
	case "RTMAX":
		return unix.Signal(64)
	}
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && n > 0 && n < 65 {
		return unix.Signal(n)
	}
	return unix.SIGTERM
}
