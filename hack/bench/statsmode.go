package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// --- stats: the CPU the runtime spends on kubelet's stats polling.
//
// Setup starts -pods pods (default 100) of one sleeping container each and
// leaves them running for every round. A round measures, on the runtime's
// own processes (the daemon, and what -runtime-procs selects: containerd's
// runc shims, which read the cgroups for containerd; shim's monitors, which
// take no part), from their utime+stime:
//
//   - idle: the CPU per second over -window with no calls (background work:
//     containerd walks every snapshot on its own every 10 s);
//   - polled: the CPU per second over -window while a kubelet poll runs
//     every -poll-interval: ListPodSandbox, ListContainers,
//     ListContainerStats and ImageFsInfo, what the eviction manager's
//     summary reads with the default feature gates;
//   - the primary metric, poll_cpu_ms_per_s: polled minus idle, the cost of
//     the polling itself;
//   - for each call of the poll (and ListPodSandboxStats where the runtime
//     has it), a burst of -polls calls back to back: the CPU (all the
//     runtime's processes, and the daemon alone) and the client-side time
//     of one call.

func setupStats(ctx context.Context, b *bench, t *target) error {
	if t.DaemonPID <= 0 {
		return fmt.Errorf("%s: stats mode needs the daemon's pid (-daemon-pid)", t.Name)
	}
	if err := setupPods(ctx, b, t); err != nil {
		return err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	pods, _, err := b.startPods(cctx, t, 0, b.Pods, false)
	t.running = pods
	if err != nil {
		return err
	}
	if err := checkAllRunning(cctx, t, pods); err != nil {
		return err
	}
	fmt.Fprintf(b.Text, "bench: %s: %d pods running\n", t.Name, len(pods))
	// One call first: lazily built state (cgroup paths, first walks)
	// is not what a poll costs.
	return kubeletPoll(cctx, t)
}

func teardownStats(ctx context.Context, b *bench, t *target) error {
	err := removePods(ctx, t, t.running)
	t.running = nil
	return err
}

// kubeletPoll makes the calls of one eviction-manager summary.
func kubeletPoll(ctx context.Context, t *target) error {
	if _, err := t.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
		return t.wrap("ListPodSandbox", err)
	}
	if _, err := t.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
		return t.wrap("ListContainers", err)
	}
	r, err := t.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		return t.wrap("ListContainerStats", err)
	}
	if n := len(r.GetStats()); n < len(t.running) {
		return fmt.Errorf("%s: ListContainerStats gave %d stats for %d running containers", t.Name, n, len(t.running))
	}
	if _, err := t.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
		return t.wrap("ImageFsInfo", err)
	}
	return nil
}

// cpuOf sums utime+stime (ms) of the daemon and the runtime's selected
// processes. Processes are selected again each time (a shim may start);
// those that exit between the two readings are left out of both.
func (b *bench) cpuOf(t *target) (map[int]float64, error) {
	procs, err := listProcs(b.ProcRoot)
	if err != nil {
		return nil, err
	}
	pids := []int{t.DaemonPID}
	for pid := range t.Procs.Select(procs) {
		pids = append(pids, pid)
	}
	out := map[int]float64{}
	for _, pid := range pids {
		ms, err := procCPUms(b.ProcRoot, pid)
		if err != nil {
			if pid == t.DaemonPID {
				return nil, fmt.Errorf("%s: daemon %d: %w", t.Name, pid, err)
			}
			continue
		}
		out[pid] = ms
	}
	return out, nil
}

// cpuDelta is the CPU (ms) the processes present in both readings used
// between them.
func cpuDelta(a, b map[int]float64) float64 {
	var d float64
	for pid, v := range b {
		if u, ok := a[pid]; ok {
			d += v - u
		}
	}
	return d
}

// procCPUms reads utime+stime of a process in ms (USER_HZ is 100).
func procCPUms(procRoot string, pid int) (float64, error) {
	stat, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0, fmt.Errorf("stat of %d: no command field", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("stat of %d: too few fields", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat of %d: bad utime/stime", pid)
	}
	return float64(u+s) * 10, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func roundStats(ctx context.Context, b *bench, t *target, round int) (sample, error) {
	// Idle window.
	c0, err := b.cpuOf(t)
	if err != nil {
		return sample{}, err
	}
	if err := sleepCtx(ctx, b.Window); err != nil {
		return sample{}, err
	}
	c1, err := b.cpuOf(t)
	if err != nil {
		return sample{}, err
	}
	idle := cpuDelta(c0, c1) / b.Window.Seconds()

	// Polled window: a poll every PollInterval, as kubelet does.
	start := time.Now()
	polls := 0
	for time.Since(start) < b.Window {
		cctx, cancel := b.callCtx(ctx)
		err := kubeletPoll(cctx, t)
		cancel()
		if err != nil {
			return sample{}, err
		}
		polls++
		if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(polls)*b.PollInterval))); err != nil {
			return sample{}, err
		}
	}
	c2, err := b.cpuOf(t)
	if err != nil {
		return sample{}, err
	}
	polled := cpuDelta(c1, c2) / time.Since(start).Seconds()

	m := map[string]float64{
		"poll_cpu_ms_per_s":   polled - idle,
		"idle_cpu_ms_per_s":   idle,
		"polled_cpu_ms_per_s": polled,
	}
	// Bursts of each call: the CPU (runtime processes, and the daemon
	// alone) and the client-side time of one call.
	n := float64(b.Polls)
	for _, call := range statsCalls {
		cctx, cancel := b.callCtx(ctx)
		before, err := b.cpuOf(t)
		if err != nil {
			cancel()
			return sample{}, err
		}
		t0 := time.Now()
		skipped := false
		for range b.Polls {
			if err := call.do(cctx, t); err != nil {
				if call.optional {
					// containerd 1.6 answers ListPodSandboxStats with
					// an error for pods without a cgroup parent.
					fmt.Fprintf(b.Text, "bench: %s: %s not measured: %v\n", t.Name, call.name, err)
					skipped = true
					break
				}
				cancel()
				return sample{}, err
			}
		}
		wall := time.Since(t0)
		after, err := b.cpuOf(t)
		cancel()
		if err != nil {
			return sample{}, err
		}
		if skipped {
			continue
		}
		m[call.name+"_cpu_ms"] = cpuDelta(before, after) / n
		m[call.name+"_daemon_cpu_ms"] = (after[t.DaemonPID] - before[t.DaemonPID]) / n
		m[call.name+"_client_ms"] = ms(wall) / n
	}
	return sample{Metrics: m, Detail: map[string]any{"containers": len(t.running), "polls": polls}}, nil
}

// statsCalls are the calls measured one by one; optional ones are skipped
// where the runtime does not implement them.
var statsCalls = []struct {
	name     string
	optional bool
	do       func(ctx context.Context, t *target) error
}{
	{"list_container_stats", false, func(ctx context.Context, t *target) error {
		_, err := t.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		return t.wrap("ListContainerStats", err)
	}},
	{"list_pod_stats", true, func(ctx context.Context, t *target) error {
		_, err := t.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
		return t.wrap("ListPodSandboxStats", err)
	}},
	{"image_fs_info", false, func(ctx context.Context, t *target) error {
		_, err := t.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
		return t.wrap("ImageFsInfo", err)
	}},
	{"list_containers", false, func(ctx context.Context, t *target) error {
		_, err := t.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		return t.wrap("ListContainers", err)
	}},
	{"list_pods", false, func(ctx context.Context, t *target) error {
		_, err := t.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		return t.wrap("ListPodSandbox", err)
	}},
}
