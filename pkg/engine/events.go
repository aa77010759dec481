package engine

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
)

// eventBus fans container events out to GetContainerEvents streams.
type eventBus struct {
	mu   sync.Mutex
	subs map[chan *runtimeapi.ContainerEventResponse]struct{}
}

func newEventBus() *eventBus {
	return &eventBus{subs: map[chan *runtimeapi.ContainerEventResponse]struct{}{}}
}

// Subscribe returns a channel of events and a function to unsubscribe.
func (b *eventBus) subscribe() (<-chan *runtimeapi.ContainerEventResponse, func()) {
	ch := make(chan *runtimeapi.ContainerEventResponse, 1024)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

func (b *eventBus) publish(ev *runtimeapi.ContainerEventResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- ev:
		default:
			log.L.Warnf("dropping a container event for a slow GetContainerEvents client")
		}
	}
}

// Events subscribes to container events.
func (r *Runtime) Events() (<-chan *runtimeapi.ContainerEventResponse, func()) {
	return r.events.subscribe()
}

func (r *Runtime) emit(c *Container, t runtimeapi.ContainerEventType) {
	if c.Infra {
		return
	}
	ev := &runtimeapi.ContainerEventResponse{
		ContainerId:        c.ID,
		ContainerEventType: t,
		CreatedAt:          time.Now().UnixNano(),
	}
	if sb, err := r.getSandbox(c.SandboxID); err == nil {
		ev.PodSandboxStatus = r.sandboxStatus(sb)
		for _, pc := range r.podContainers(sb.ID) {
			if !pc.Infra && (t != runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT || pc.ID != c.ID) {
				ev.ContainersStatuses = append(ev.ContainersStatuses, r.containerStatus(pc))
			}
		}
	}
	if t == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
		ev.ContainersStatuses = append(ev.ContainersStatuses, r.containerStatus(c))
	}
	r.events.publish(ev)
}

// followEvents applies a monitor's exit events until ctx ends. On every
// (re)connection it reconciles with the exit records, so nothing is missed.
// A monitor that is not running (nothing listens on its socket) is gone;
// one that is slow is retried.
func (r *Runtime) followEvents(ctx context.Context, podID string, c *monitor.Client) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.Events(ctx, func(ev monitor.Event) {
			backoff = 100 * time.Millisecond
			r.exited(ctx, ev.ID, &ev.Exit)
		})
		if ctx.Err() != nil {
			return
		}
		r.reconcilePod(ctx, podID)
		if monitor.IsGone(err) {
			log.G(ctx).WithField(log.FieldPodID, podID).Warn("the pod's monitor is gone")
			r.monitorGone(ctx, podID)
			return
		}
		log.G(ctx).WithError(err).WithField(log.FieldPodID, podID).Debug("monitor event stream ended; reconnecting")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// reconcilePod applies the exit records of the pod's containers.
func (r *Runtime) reconcilePod(ctx context.Context, podID string) {
	for _, c := range r.podContainers(podID) {
		r.refresh(ctx, c)
	}
}

// refresh marks a created or running container exited when its exit
// record says so.
func (r *Runtime) refresh(ctx context.Context, c *Container) {
	v := c.view()
	if v.State != ContainerRunning && v.State != ContainerCreated {
		return
	}
	rec, err := monitor.ReadExitRecord(v.Bundle)
	if err != nil {
		return
	}
	r.exited(ctx, c.ID, rec)
}

// exited records a container's exit, once.
func (r *Runtime) exited(ctx context.Context, id string, rec *monitor.ExitRecord) {
	r.mu.RLock()
	c := r.containers[id]
	r.mu.RUnlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	already := c.State == ContainerExited || c.removed
	c.mu.Unlock()
	if already {
		return
	}
	changed := false
	err := r.updateContainer(c, func(c *Container) {
		if c.State == ContainerExited {
			return
		}
		changed = true
		c.State = ContainerExited
		c.ExitCode = int32(rec.Code)
		c.FinishedAt = rec.FinishedAt
		switch {
		case rec.OOMKilled:
			c.Reason = "OOMKilled"
		case rec.Code == 0:
			c.Reason = "Completed"
		default:
			c.Reason = "Error"
		}
	})
	if err != nil {
		log.G(ctx).WithError(err).WithField(log.FieldContainerID, id).Error("recording container exit")
	}
	if changed && c.Infra {
		// The init of the pod's shared pid namespace is gone, and every
		// process in it with it: the pod is done (kubelet recreates it).
		if sb, err := r.getSandbox(c.SandboxID); err == nil {
			log.G(ctx).WithField(log.FieldPodID, sb.ID).Warn("the pod's infra process exited; the pod is not ready")
			r.updateSandbox(sb, func(sb *Sandbox) { sb.State, sb.InfraPid = SandboxNotReady, 0 })
		}
	}
	if !changed {
		return
	}
	c.mu.Lock()
	later := c.starting
	c.stopPending = later
	c.mu.Unlock()
	if !later {
		r.emit(c, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}
}

// monitorGone handles a pod whose monitor died: its containers lost their
// parent, their stdio and their log writer. They are killed through the
// execution driver and recorded exited (255, Unknown), unless an exit
// record says how they ended.
func (r *Runtime) monitorGone(ctx context.Context, podID string) {
	r.detachMonitor(podID)
	drv, derr := r.podDriver(podID)
	for _, c := range r.podContainers(podID) {
		v := c.view()
		if v.State != ContainerRunning && v.State != ContainerCreated {
			continue
		}
		if _, err := os.Stat(filepath.Join(v.Bundle, monitor.ExitFile)); err == nil {
			r.refresh(ctx, c)
			continue
		}
		var err error
		if derr != nil || v.Own {
			// No driver may touch it (or none made it): its cgroup still
			// finds its processes.
			if derr != nil {
				log.G(ctx).WithError(derr).WithField(log.FieldContainerID, c.ID).Warn("killing through the container's cgroup")
			}
			err = execdrv.KillCgroup(v.Bundle, c.ID)
		} else if err = drv.Kill(ctx, c.ID, unix.SIGKILL, true); errdefs.IsNotFound(err) {
			err = nil
		}
		if err != nil {
			log.G(ctx).WithError(err).WithField(log.FieldContainerID, c.ID).Warn("killing a container whose monitor is gone")
		}
		r.exited(ctx, c.ID, &monitor.ExitRecord{Exit: monitor.Exit{Code: 255}, FinishedAt: time.Now().UTC()})
		r.updateContainer(c, func(c *Container) {
			c.Reason, c.Message = "Unknown", "the pod's monitor exited"
		})
	}
}

var _ = errdefs.ErrNotFound
