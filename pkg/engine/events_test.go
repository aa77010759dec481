package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
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

// startMonitor answers a pod's monitor socket: every request succeeds,
// but a start first runs onStart and fails if it returns an error.
func startMonitor(t *testing.T, r *Runtime, podID string, onStart func() error) {
	t.Helper()
	dir := filepath.Join(r.o.State, "pods", podID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, monitor.SocketName)
	serveMonitor(t, sock, func(req monitor.Request) monitor.Response {
		var resp monitor.Response
		if req.Op == monitor.OpStart {
			if err := onStart(); err != nil {
				w := errdefs.ToWire(err)
				resp.Error = &w
			}
		}
		return resp
	})
	r.monitors[podID] = &podMonitor{client: &monitor.Client{Socket: sock}, cancel: func() {}}
}

// TestStartJobEvents drives StartContainer's job with the exit arriving
// while the monitor answers the start: STOPPED follows STARTED; a start
// that fails announces the exit alone; a pod removal during the start
// announces the exit before DELETED.
func TestStartJobEvents(t *testing.T) {
	ctx := context.Background()
	exit := &monitor.ExitRecord{Exit: monitor.Exit{Code: 4}, FinishedAt: time.Now()}
	const (
		started = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
		stopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
		deleted = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
	)
	for _, tc := range []struct {
		name    string
		fail    bool // the start fails after the exit was seen
		remove  bool // the container is removed while the start runs
		wantErr bool
		want    []runtimeapi.ContainerEventType
	}{
		{"exits at once", false, false, false, []runtimeapi.ContainerEventType{started, stopped}},
		{"start fails", true, false, true, []runtimeapi.ContainerEventType{stopped}},
		{"removed meanwhile", false, true, false, []runtimeapi.ContainerEventType{stopped, deleted}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testRuntime(t)
			ch, unsub := r.Events()
			defer unsub()
			podID := newID()[:8]
			id := newID()
			c := &Container{ID: id, SandboxID: podID, State: ContainerCreated,
				Bundle: filepath.Join(r.o.State, "pods", podID, "ctrs", id), Snapshot: "ctr-" + id}
			r.mu.Lock()
			r.containers[id] = c
			r.mu.Unlock()
			startMonitor(t, r, podID, func() error {
				r.exited(ctx, id, exit)
				if tc.remove {
					if err := r.deleteContainer(ctx, c); err != nil {
						t.Errorf("remove during the start: %v", err)
					}
				}
				if tc.fail {
					return fmt.Errorf("start failed: %w", errdefs.ErrUnavailable)
				}
				return nil
			})
			j := &Job{logger: logrus.NewEntry(logrus.StandardLogger())}
			_, err := r.startContainer(ctx, j, id)
			if (err != nil) != tc.wantErr {
				t.Fatalf("start: %v", err)
			}
			var got []runtimeapi.ContainerEventType
			for done := false; !done; {
				select {
				case ev := <-ch:
					got = append(got, ev.ContainerEventType)
				default:
					done = true
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("events %v, want %v", got, tc.want)
			}
		})
	}
}
