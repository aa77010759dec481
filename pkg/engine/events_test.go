package engine

import (
	"context"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/monitor"
)

// TestExitDuringStart: an exit recorded while the container's start job
// runs (a process that ends at once, its exit event racing the start's
// reply) is announced after CONTAINER_STARTED, never before it.
func TestExitDuringStart(t *testing.T) {
	r := testRuntime(t)
	ch, unsub := r.Events()
	defer unsub()
	ctx := context.Background()
	newCtr := func(id string) *Container {
		c := &Container{ID: id, SandboxID: "nopod", State: ContainerCreated}
		r.mu.Lock()
		r.containers[id] = c
		r.mu.Unlock()
		return c
	}
	next := func() runtimeapi.ContainerEventType {
		select {
		case ev := <-ch:
			return ev.ContainerEventType
		default:
			return -1
		}
	}
	exit := &monitor.ExitRecord{Exit: monitor.Exit{Code: 4}, FinishedAt: time.Now()}

	// Not starting: the exit is announced when it is recorded.
	idle := newCtr("idle")
	r.exited(ctx, idle.ID, exit)
	if got := next(); got != runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
		t.Fatalf("exit of a container not starting: event %v, want STOPPED", got)
	}

	// Starting: held until the start has announced itself.
	c := newCtr("racing")
	c.mu.Lock()
	c.starting = true
	c.mu.Unlock()
	r.exited(ctx, c.ID, exit)
	if got := next(); got != -1 {
		t.Fatalf("exit during the start announced before it: %v", got)
	}
	if c.view().State != ContainerExited || c.view().ExitCode != 4 {
		t.Fatalf("exit not recorded: %+v", c.view())
	}
	r.emit(c, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	r.startEnded(c)
	r.startEnded(c) // a failed start's deferred call too: once only
	for _, want := range []runtimeapi.ContainerEventType{
		runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
		-1,
	} {
		if got := next(); got != want {
			t.Fatalf("event %v, want %v", got, want)
		}
	}
}
