package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"
)

// sample is what one round of a mode measured on one target.
type sample struct {
	Metrics map[string]float64
	Detail  map[string]any
}

// mode is one benchmark. Metric names end in their unit: _ms or _kib.
type mode struct {
	Name    string
	Primary string // the metric the headline ratio is taken of
	Runtime bool   // needs the CRI RuntimeService
	// SharedPID: the pods share one PID namespace (kubelet's
	// shareProcessNamespace), not one per container.
	SharedPID bool
	Setup     func(ctx context.Context, b *bench, t *target) error
	Round     func(ctx context.Context, b *bench, t *target, round int) (sample, error)
	// Teardown (optional) removes what Setup made; it runs even when the
	// rounds failed.
	Teardown func(ctx context.Context, b *bench, t *target) error
}

var modes = map[string]mode{
	"pull":  {Name: "pull", Primary: "pull_ms", Setup: setupPull, Round: roundPull},
	"start": {Name: "start", Primary: "start_ms", Runtime: true, Setup: setupPods, Round: roundStart},
	"start-shared-pid": {Name: "start-shared-pid", Primary: "start_ms", Runtime: true, SharedPID: true,
		Setup: setupPods, Round: roundStart},
	"concurrent": {Name: "concurrent", Primary: "wall_ms", Runtime: true, Setup: setupPods, Round: roundConcurrent},
	"memory":     {Name: "memory", Primary: "pss_per_pod_kib", Runtime: true, Setup: setupMemory, Round: roundMemory},
	"idle":       {Name: "idle", Primary: "rss_kib", Setup: setupIdle, Round: roundIdle},
	// rss-after is idle's measure at the end of a run: the daemon's
	// memory after the other modes, their pods removed.
	"rss-after": {Name: "rss-after", Primary: "rss_kib", Setup: setupIdle, Round: roundIdle},
	"stats":     {Name: "stats", Primary: "poll_cpu_ms_per_s", Runtime: true, Setup: setupStats, Round: roundStats, Teardown: teardownStats},
	"exec": {Name: "exec", Primary: "exec_ms", Runtime: true, Setup: setupExec, Round: roundExecSync,
		Teardown: teardownExec},
	"exec-stream": {Name: "exec-stream", Primary: "exec_stream_ms", Runtime: true, Setup: setupExec,
		Round: roundExecStream, Teardown: teardownExec},
	"stream-throughput": {Name: "stream-throughput", Primary: "throughput_mibs", Runtime: true, Setup: setupExec,
		Round: roundStreamThroughput, Teardown: teardownExec},
}

func modeNames() []string {
	var n []string
	for k := range modes {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// callCtx bounds one round.
func (b *bench) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.Timeout)
}

// cleanupCtx is a fresh context for removing what a round made, so that a
// cancelled run still cleans up.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
}

// --- pull: RemoveImage, then a timed PullImage.

func setupPull(ctx context.Context, b *bench, t *target) error {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	// One pull proves the endpoint can reach the image before timing starts.
	return t.ensureImage(cctx, b.Image)
}

func roundPull(ctx context.Context, b *bench, t *target, _ int) (sample, error) {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	if err := t.removeImage(cctx, b.Image); err != nil {
		return sample{}, err
	}
	if ok, err := t.hasImage(cctx, b.Image); err != nil {
		return sample{}, err
	} else if ok {
		return sample{}, fmt.Errorf("%s: %s still present after RemoveImage", t.Name, b.Image)
	}
	t0 := time.Now()
	if err := t.pullImage(cctx, b.Image); err != nil {
		return sample{}, err
	}
	d := time.Since(t0)
	if ok, err := t.hasImage(cctx, b.Image); err != nil {
		return sample{}, err
	} else if !ok {
		return sample{}, fmt.Errorf("%s: %s missing after PullImage", t.Name, b.Image)
	}
	return sample{Metrics: map[string]float64{"pull_ms": ms(d)}}, nil
}

// --- pods: shared set-up of start, concurrent and memory.

func setupPods(ctx context.Context, b *bench, t *target) error {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	n, err := t.podCount(cctx)
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("%s: ListPodSandbox: %w", t.Name, errUnsupported)
	}
	if n > 0 {
		fmt.Fprintf(b.Text, "bench: warning: %s already runs %d pods\n", t.Name, n)
	}
	for _, ref := range []string{b.Pod.PauseImage, b.Pod.Image} {
		if ref == "" {
			continue
		}
		if err := t.ensureImage(cctx, ref); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) podName(t *target, round, k int) string {
	return fmt.Sprintf("bench-%s-%s-%s-r%d-%d", b.Mode, b.RunID, t.Label, round, k)
}

func roundStart(ctx context.Context, b *bench, t *target, round int) (sample, error) {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	p, st, err := t.startPod(cctx, b.Pod, b.podName(t, round, 0))
	if err != nil {
		return sample{}, err
	}
	rctx, rcancel := cleanupCtx(ctx)
	defer rcancel()
	err = t.checkRunning(cctx, p)
	if rerr := t.removePod(rctx, p); err == nil {
		err = rerr
	}
	if err != nil {
		return sample{}, err
	}
	return sample{Metrics: map[string]float64{
		"start_ms":     ms(st.total()),
		"run_pod_ms":   ms(st.RunPod),
		"create_ms":    ms(st.Create),
		"start_ctr_ms": ms(st.Start),
	}}, nil
}

// startPods starts n pods at once (parallel) or one after the other, and
// returns those that started. Errors are joined.
func (b *bench) startPods(ctx context.Context, t *target, round, n int, parallel bool) ([]pod, []startTimes, error) {
	pods := make([]pod, n)
	times := make([]startTimes, n)
	errs := make([]error, n)
	if parallel {
		var wg sync.WaitGroup
		for k := range n {
			wg.Go(func() { pods[k], times[k], errs[k] = t.startPod(ctx, b.Pod, b.podName(t, round, k)) })
		}
		wg.Wait()
	} else {
		for k := range n {
			if pods[k], times[k], errs[k] = t.startPod(ctx, b.Pod, b.podName(t, round, k)); errs[k] != nil {
				break
			}
		}
	}
	var ok []pod
	var okTimes []startTimes
	for k := range n {
		if errs[k] == nil && pods[k].CtrID != "" {
			ok = append(ok, pods[k])
			okTimes = append(okTimes, times[k])
		}
	}
	return ok, okTimes, errors.Join(errs...)
}

// removePods removes pods in parallel, at most 16 at a time.
func removePods(ctx context.Context, t *target, pods []pod) error {
	errs := make([]error, len(pods))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = t.removePod(ctx, p)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func checkAllRunning(ctx context.Context, t *target, pods []pod) error {
	for _, p := range pods {
		if err := t.checkRunning(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func roundConcurrent(ctx context.Context, b *bench, t *target, round int) (sample, error) {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	t0 := time.Now()
	pods, times, err := b.startPods(cctx, t, round, b.Pods, true)
	wall := time.Since(t0)
	rctx, rcancel := cleanupCtx(ctx)
	defer rcancel()
	if err == nil {
		err = checkAllRunning(cctx, t, pods)
	}
	if rerr := removePods(rctx, t, pods); err == nil {
		err = rerr
	}
	if err != nil {
		return sample{}, err
	}
	per := make([]float64, len(times))
	for i, st := range times {
		per[i] = ms(st.total())
	}
	s := Summarize(per)
	return sample{Metrics: map[string]float64{
		"wall_ms":    ms(wall),
		"pod_p50_ms": s.Median,
		"pod_max_ms": s.Max,
	}, Detail: map[string]any{"pods": len(pods)}}, nil
}

// --- memory: the runtime's own processes while Pods pods run.

func setupMemory(ctx context.Context, b *bench, t *target) error {
	if len(t.Procs.Names) == 0 {
		return fmt.Errorf("%s: memory mode needs the runtime's process names (-runtime-procs)", t.Name)
	}
	return setupPods(ctx, b, t)
}

func roundMemory(ctx context.Context, b *bench, t *target, round int) (sample, error) {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	procs, err := listProcs(b.ProcRoot)
	if err != nil {
		return sample{}, err
	}
	if before := t.Procs.Select(procs); len(before) > 0 {
		fmt.Fprintf(b.Text, "bench: warning: %s: %d runtime processes run before the pods start; they are counted\n", t.Name, len(before))
	}
	pods, _, err := b.startPods(cctx, t, round, b.Pods, false)
	rctx, rcancel := cleanupCtx(ctx)
	defer rcancel()
	defer func() {
		if rerr := removePods(rctx, t, pods); rerr != nil {
			fmt.Fprintf(b.Text, "bench: %v\n", rerr)
		}
	}()
	if err != nil {
		return sample{}, err
	}
	if err := checkAllRunning(cctx, t, pods); err != nil {
		return sample{}, err
	}
	select {
	case <-time.After(b.Settle):
	case <-ctx.Done():
		return sample{}, ctx.Err()
	}
	if procs, err = listProcs(b.ProcRoot); err != nil {
		return sample{}, err
	}
	sel := t.Procs.Select(procs)
	g, err := measureGroup(b.ProcRoot, sel)
	if err != nil {
		return sample{}, err
	}
	if g.Procs == 0 {
		return sample{}, fmt.Errorf("%s: no runtime process matches %v (match %q) while %d pods run", t.Name, t.Procs.Names, t.Procs.Match, len(pods))
	}
	n := float64(len(pods))
	m := map[string]float64{
		"pss_per_pod_kib": float64(g.Total.PSS) / n,
		"rss_per_pod_kib": float64(g.Total.RSS) / n,
		"pss_total_kib":   float64(g.Total.PSS),
	}
	for name, u := range g.ByName {
		m["pss_per_pod_kib:"+exeName(name)] = float64(u.PSS) / n
	}
	if t.DaemonPID > 0 {
		if d, err := readRollup(b.ProcRoot, t.DaemonPID); err == nil {
			m["daemon_pss_kib"] = float64(d.PSS)
		}
	}
	return sample{Metrics: m, Detail: map[string]any{"pods": len(pods), "procs": g.Procs, "counts": g.Counts}}, nil
}

// --- idle: the daemon's own memory with no pods.

func setupIdle(ctx context.Context, b *bench, t *target) error {
	if t.DaemonPID <= 0 {
		return fmt.Errorf("%s: idle mode needs the daemon's pid (-daemon-pid)", t.Name)
	}
	_, err := readRollup(b.ProcRoot, t.DaemonPID)
	return err
}

func roundIdle(ctx context.Context, b *bench, t *target, round int) (sample, error) {
	if round > 0 {
		select {
		case <-time.After(b.Interval):
		case <-ctx.Done():
			return sample{}, ctx.Err()
		}
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	pods, err := t.podCount(cctx)
	if err != nil {
		return sample{}, err
	}
	if pods > 0 {
		fmt.Fprintf(b.Text, "bench: warning: %s runs %d pods; %s is not idle\n", t.Name, pods, b.Mode)
	}
	u, err := readRollup(b.ProcRoot, t.DaemonPID)
	if err != nil {
		return sample{}, err
	}
	return sample{
		Metrics: map[string]float64{"rss_kib": float64(u.RSS), "pss_kib": float64(u.PSS)},
		Detail:  map[string]any{"pods": pods, "daemon_pid": strconv.Itoa(t.DaemonPID)},
	}, nil
}
