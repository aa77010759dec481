package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func newEngine(t *testing.T) (*Engine, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	e, err := New(Options{History: 4, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return e, reg
}

// sleeper registers a job that tracks how many run at once per object.
func sleeper(e *Engine, maxSeen *atomic.Int32) *Handler[string, string] {
	var mu sync.Mutex
	active := map[string]int{}
	return Register(e, "sleep", Spec[string, string]{
		Object: func(o string) string { return o },
		Args:   func(o string) map[string]string { return map[string]string{"object": o} },
		Run: func(ctx context.Context, j *Job, o string) (string, error) {
			mu.Lock()
			active[o]++
			if n := int32(active[o]); n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			mu.Unlock()
			j.Logf("working on %s", o)
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			active[o]--
			mu.Unlock()
			return "done " + o, nil
		},
	})
}

func TestSameObjectSerialized(t *testing.T) {
	e, _ := newEngine(t)
	var maxSeen atomic.Int32
	h := sleeper(e, &maxSeen)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); h.Run(context.Background(), "a") }()
	}
	wg.Wait()
	if maxSeen.Load() != 1 {
		t.Fatalf("%d jobs ran at once on one object, want 1", maxSeen.Load())
	}
}

func TestDifferentObjectsParallel(t *testing.T) {
	e, _ := newEngine(t)
	started := make(chan string, 2)
	release := make(chan struct{})
	h := Register(e, "block", Spec[string, struct{}]{
		Object: func(o string) string { return o },
		Run: func(ctx context.Context, j *Job, o string) (struct{}, error) {
			started <- o
			<-release
			return struct{}{}, nil
		},
	})
	go h.Run(context.Background(), "a")
	go h.Run(context.Background(), "b")
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("jobs on different objects did not run in parallel")
		}
	}
	close(release)
}

func TestJobRecordAndMetrics(t *testing.T) {
	e, reg := newEngine(t)
	var maxSeen atomic.Int32
	h := sleeper(e, &maxSeen)
	fail := Register(e, "fail", Spec[string, int]{
		Run: func(ctx context.Context, j *Job, s string) (int, error) {
			return 0, fmt.Errorf("no %s: %w", s, errdefs.ErrNotFound)
		},
	})
	out, err := h.Run(WithEnv(context.Background(), map[string]string{"request_id": "r1"}), "x")
	if err != nil || out != "done x" {
		t.Fatalf("got %q %v", out, err)
	}
	if _, err := fail.Run(context.Background(), "y"); !errdefs.IsNotFound(err) {
		t.Fatalf("want not found, got %v", err)
	}
	jobs := e.Jobs()
	if len(jobs) != 2 {
		t.Fatalf("got %d jobs", len(jobs))
	}
	if j := jobs[0]; j.Name != "fail" || j.Status != StatusFailed || j.Class != "not_found" {
		t.Errorf("fail job: %+v", j)
	}
	if j := jobs[1]; j.Name != "sleep" || j.Status != StatusSucceeded || j.Args["object"] != "x" ||
		j.Env["request_id"] != "r1" || j.Duration < 20*time.Millisecond || len(j.Log) != 1 {
		t.Errorf("sleep job: %+v", j)
	}
	if n := testutil.ToFloat64(e.jobsTotal.WithLabelValues("fail", "not_found")); n != 1 {
		t.Errorf("fail/not_found counter = %v", n)
	}
	if c, err := testutil.GatherAndCount(reg, "shim_job_duration_seconds"); err != nil || c != 2 {
		t.Errorf("duration series = %d %v", c, err)
	}
	// History is capped.
	for i := 0; i < 10; i++ {
		h.Run(context.Background(), "z")
	}
	if n := len(e.Jobs()); n != 4 {
		t.Errorf("history holds %d jobs, want 4", n)
	}
}

func TestPanicIsInternalError(t *testing.T) {
	e, _ := newEngine(t)
	h := Register(e, "boom", Spec[int, int]{Run: func(ctx context.Context, j *Job, i int) (int, error) {
		var m map[string]int
		m["x"] = i // nil map write panics
		return 0, nil
	}})
	_, err := h.Run(context.Background(), 1)
	if !errdefs.Is(err, errdefs.ErrInternal) {
		t.Fatalf("want internal error, got %v", err)
	}
	if e.Jobs()[0].Status != StatusFailed {
		t.Fatal("panicked job not recorded as failed")
	}
}

func TestLockWaitHonoursContext(t *testing.T) {
	e, _ := newEngine(t)
	release := make(chan struct{})
	h := Register(e, "hold", Spec[string, struct{}]{
		Object: func(o string) string { return o },
		Run: func(ctx context.Context, j *Job, o string) (struct{}, error) {
			<-release
			return struct{}{}, nil
		},
	})
	go h.Run(context.Background(), "a")
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.Run(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
	close(release)
}

func TestShutdownCancelsAfterGrace(t *testing.T) {
	e, _ := newEngine(t)
	h := Register(e, "wait", Spec[int, int]{Run: func(ctx context.Context, j *Job, i int) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}})
	res := make(chan error, 1)
	go func() { _, err := h.Run(context.Background(), 1); res <- err }()
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := e.Shutdown(ctx); err == nil {
		t.Fatal("shutdown reported no cancelled jobs")
	}
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("job: %v", err)
	}
	if _, err := h.Run(context.Background(), 2); !errdefs.IsUnavailable(err) {
		t.Fatalf("job after shutdown: %v", err)
	}
}
