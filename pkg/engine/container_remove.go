package engine

// Container remove: an exited container and everything it had goes; a
// container whose process may still run keeps its record.

import (
	"context"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
)

func (r *Runtime) removeContainer(ctx context.Context, j *Job, id string) (struct{}, error) {
	c, err := r.getContainer(id)
	if errdefs.IsNotFound(err) {
		return struct{}{}, nil
	}
	if err != nil {
		return struct{}{}, err
	}
	if err := r.killContainer(ctx, c, 0); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.deleteContainer(ctx, c)
}

// deleteContainer removes an exited container and everything it had. A
// container whose process may still run keeps its record: the remove
// fails and can be retried.
func (r *Runtime) deleteContainer(ctx context.Context, c *Container) error {
	deleted := false
	if mon := r.monitorClient(c.SandboxID); mon != nil {
		err := r.deleteThroughMonitor(ctx, mon, c)
		switch {
		case err == nil:
			deleted = true
		case errdefs.IsNotFound(err), monitor.IsGone(err):
			// The monitor does not hold it, or is not running.
		default:
			return err
		}
	}
	if !deleted {
		// No monitor (the pod is stopped, or it died): remove the
		// container's runtime state and cgroups directly.
		drv, err := r.podDriver(c.SandboxID)
		if err != nil {
			return fmt.Errorf("deleting container %s: %w", c.ID, err)
		}
		if err := drv.Delete(ctx, c.ID, true); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("deleting container %s: %w", c.ID, err)
		}
	}
	if err := r.releaseContainerFiles(ctx, c); err != nil {
		return err
	}
	if err := r.forgetContainer(c); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.containers, c.ID)
	if r.ctrNames[c.Name] == c.ID {
		delete(r.ctrNames, c.Name)
	}
	r.mu.Unlock()
	r.startEnded(c)
	r.emit(c, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}

// deleteExitWait bounds the wait for a container's exit after its cgroup
// was killed.
var deleteExitWait = 10 * time.Second

// deleteThroughMonitor has the monitor delete c. When the monitor is up
// but cannot confirm the container's process is gone (it "did not exit
// after delete", or the call failed half way), every process in the
// container's cgroup is killed, the exit awaited and the delete retried;
// if the process may still run, the error is returned.
func (r *Runtime) deleteThroughMonitor(ctx context.Context, mon *monitor.Client, c *Container) error {
	req := &monitor.Request{Op: monitor.OpDelete, ID: c.ID, Force: true}
	_, err := mon.Call(ctx, req)
	if err == nil || errdefs.IsNotFound(err) || monitor.IsGone(err) || ctx.Err() != nil {
		return err
	}
	l := log.G(ctx).WithField(log.FieldContainerID, c.ID)
	l.WithError(err).Warn("the monitor could not delete the container; killing its cgroup")
	if kerr := execdrv.KillCgroup(c.view().Bundle, c.ID); kerr != nil {
		l.WithError(kerr).Warn("killing the container's cgroup")
	}
	if !r.waitMonitorExit(ctx, mon, c.ID) {
		return fmt.Errorf("container %s may still be running; its record is kept: %w", c.ID, err)
	}
	if _, err := mon.Call(ctx, req); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: %w", c.ID, err)
	}
	return nil
}

// waitMonitorExit waits until the monitor reports the container's init
// reaped (or no longer holds the container).
func (r *Runtime) waitMonitorExit(ctx context.Context, mon *monitor.Client, id string) bool {
	deadline := time.Now().Add(deleteExitWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		st, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpState})
		if err == nil {
			running := false
			for _, mc := range st.Containers {
				if mc.ID == id && mc.Exited == nil {
					running = true
				}
			}
			if !running {
				return true
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(delay)
	}
}
