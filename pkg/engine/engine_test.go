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
	"github.com/shim-cri/shim/pkg/timeline"
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
	release, holding := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := Register(e, "hold", Spec[string, struct{}]{
		Object: func(o string) string { return o },
		Run: func(ctx context.Context, j *Job, o string) (struct{}, error) {
			once.Do(func() { close(holding) })
			<-release
			return struct{}{}, nil
		},
	})
	go h.Run(context.Background(), "a")
	<-holding // the first job holds the object's lock
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.Run(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
	close(release)
}

func TestShutdownCancelsAfterGrace(t *testing.T) {
	e, _ := newEngine(t)
	running := make(chan struct{})
	h := Register(e, "wait", Spec[int, int]{Run: func(ctx context.Context, j *Job, i int) (int, error) {
		close(running) // once: later runs are refused by the shutdown
		<-ctx.Done()
		return 0, ctx.Err()
	}})
	res := make(chan error, 1)
	go func() { _, err := h.Run(context.Background(), 1); res <- err }()
	<-running
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

// TestTimedJobPhases: a timed job's phases (the lock wait, then its own
// and those marked through the context) are in its record, in order,
// within its duration, and each has a histogram series; an untimed job
// has none, and a failed timed job's phases stay out of the histogram.
func TestTimedJobPhases(t *testing.T) {
	e, reg := newEngine(t)
	timed := Register(e, "timed", Spec[bool, struct{}]{Timeline: true,
		Object: func(bool) string { return "obj" },
		Run: func(ctx context.Context, j *Job, fail bool) (struct{}, error) {
			j.Mark("first")
			timeline.Mark(ctx, "driver")
			if fail {
				return struct{}{}, fmt.Errorf("failing: %w", errdefs.ErrInternal)
			}
			j.Mark("last")
			return struct{}{}, nil
		}})
	plain := Register(e, "plain", Spec[bool, struct{}]{
		Run: func(ctx context.Context, j *Job, _ bool) (struct{}, error) {
			j.Mark("first")
			timeline.Mark(ctx, "driver")
			return struct{}{}, nil
		}})
	if _, err := timed.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := timed.Run(context.Background(), true); err == nil {
		t.Fatal("the failing job succeeded")
	}
	jobs := e.Jobs() // newest first
	want := []string{PhaseLock, "first", "driver", "last"}
	ok := jobs[2]
	if len(ok.Phases) != len(want) {
		t.Fatalf("phases %+v, want %v", ok.Phases, want)
	}
	sum := 0.0
	for i, p := range ok.Phases {
		if p.Name != want[i] || p.MS < 0 {
			t.Errorf("phase %d: %+v, want %s", i, p, want[i])
		}
		sum += p.MS
	}
	if sum > float64(ok.Duration.Microseconds())/1000+0.001 {
		t.Errorf("phases sum to %vms, the job took %v", sum, ok.Duration)
	}
	if len(jobs[1].Phases) != 0 {
		t.Errorf("untimed job has phases %+v", jobs[1].Phases)
	}
	if len(jobs[0].Phases) != 3 {
		t.Errorf("failed job's phases %+v", jobs[0].Phases)
	}
	if c, err := testutil.GatherAndCount(reg, "shim_job_phase_seconds"); err != nil || c != len(want) {
		t.Errorf("phase series = %d %v, want %d", c, err, len(want))
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "shim_job_phase_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["job"] != "timed" {
				t.Errorf("phase series of job %q", labels["job"])
			}
			samples[labels["phase"]] += m.GetHistogram().GetSampleCount()
		}
	}
	for _, p := range want {
		if samples[p] != 1 {
			t.Errorf("phase %s: %d samples, want 1", p, samples[p])
		}
	}
}
