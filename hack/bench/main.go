// Command bench measures CRI endpoints (shim, containerd, any other) the same
// way, over the CRI v1 gRPC API, and reports the ratios of one (A) to each
// of the others (the peers) and to the better peer, measured in the same run
// with alternating rounds. It never judges a time: it only reports.
//
//	bench -mode pull -endpoint unix:///run/shim/shim.sock -image shim-test/bench:8x4m -n 10
//	bench -mode pull -endpoint unix:///A.sock -compare unix:///B.sock -n 10
//	bench -mode pull -endpoint unix:///A.sock -name shim \
//	      -compare unix:///B.sock -name-b "containerd 1.6" \
//	      -compare unix:///C.sock -name-b "containerd 2.4"
//	bench -mode memory -pods 10 -endpoint unix:///B.sock \
//	      -runtime-procs containerd-shim-runc-v2,pause -proc-match /B.sock -daemon-pid 123
//	bench -report results.jsonl [-json results.json]
//
// Modes: pull (RemoveImage, then a timed PullImage), start (sequential
// RunPodSandbox -> CreateContainer -> StartContainer), start-shared-pid (the
// same with one PID namespace per pod), concurrent (-pods
// pods started at once, wall time), memory (PSS of the runtime's processes
// per running pod), idle (the daemon's RSS and PSS with no pods; rss-after
// the same at the end of a run), stats
// (the CPU the runtime spends on kubelet's stats polling with -pods
// containers running: see statsmode.go), exec (ExecSync of true),
// exec-stream (Exec of true through the streaming server, SPDY),
// stream-throughput (MiB/s of a 256 MiB cat through Exec).
//
// Standard output gets JSON lines (records "run", "sample", "summary",
// "ratio"); standard error gets the same as text. Exit status 3 means an
// endpoint does not implement what the mode needs (codes.Unimplemented).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// bench is one invocation: a mode run against one or more targets.
type bench struct {
	Mode     string
	RunID    string
	N        int
	Warmup   int
	Image    string
	Pods     int
	Timeout  time.Duration
	Settle   time.Duration
	Interval time.Duration
	ProcRoot string
	Pod      podOptions
	// stats mode
	Window       time.Duration
	PollInterval time.Duration
	Polls        int

	Out  io.Writer // JSON lines
	Text io.Writer // human-readable
}

// record is one JSON line.
type record struct {
	Type   string `json:"type"`
	Mode   string `json:"mode"`
	RunID  string `json:"run_id"`
	Time   string `json:"time,omitempty"`
	Target string `json:"target,omitempty"`

	// run
	Params  map[string]any `json:"params,omitempty"`
	Targets []targetInfo   `json:"targets,omitempty"`

	// sample
	Round   *int               `json:"round,omitempty"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
	Detail  map[string]any     `json:"detail,omitempty"`

	// summary and ratio
	Metric   string `json:"metric,omitempty"`
	Unit     string `json:"unit,omitempty"`
	Primary  bool   `json:"primary,omitempty"`
	*Summary `json:",omitempty"`

	// ratio: A/B. With several peers there is one per peer, and one with
	// Better set: B is then the peer with the better median and BP90 the
	// one with the better p90 (lower, or higher for throughput), each
	// ratio taken against its own.
	A           string   `json:"a,omitempty"`
	B           string   `json:"b,omitempty"`
	Better      bool     `json:"better,omitempty"`
	BP90        string   `json:"b_p90,omitempty"`
	MedianA     *float64 `json:"median_a,omitempty"`
	MedianB     *float64 `json:"median_b,omitempty"`
	P90A        *float64 `json:"p90_a,omitempty"`
	P90B        *float64 `json:"p90_b,omitempty"`
	MedianRatio *float64 `json:"median_ratio,omitempty"`
	P90Ratio    *float64 `json:"p90_ratio,omitempty"`
}

type targetInfo struct {
	Label     string `json:"label"`
	Name      string `json:"name"`
	Endpoint  string `json:"endpoint"`
	Runtime   string `json:"runtime"`
	Version   string `json:"version"`
	DaemonPID int    `json:"daemon_pid,omitempty"`
}

func unitOf(metric string) string {
	base, _, _ := strings.Cut(metric, ":")
	switch {
	case strings.HasSuffix(base, "_ms"):
		return "ms"
	case strings.HasSuffix(base, "_ms_per_s"):
		return "ms/s"
	case strings.HasSuffix(base, "_kib"):
		return "KiB"
	case strings.HasSuffix(base, "_mibs"):
		return "MiB/s"
	}
	return ""
}

func (b *bench) emit(r record) error {
	r.Mode, r.RunID = b.Mode, b.RunID
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(b.Out, "%s\n", line)
	return err
}

// targetFlags are the flags of endpoint A; the peers' are in peers.go.
type targetFlags struct {
	name, endpoint, procs, match *string
	daemonPID                    *int
}

func addTargetFlags(fs *flag.FlagSet) targetFlags {
	return targetFlags{
		name:      fs.String("name", "", "label of endpoint A (default: the runtime name Version reports)"),
		endpoint:  fs.String("endpoint", "", "CRI endpoint of A: unix:///path"),
		procs:     fs.String("runtime-procs", "", "memory: comma-separated executable names (or full paths) of A's own processes"),
		match:     fs.String("proc-match", "", "memory: a string the command line or executable of A's processes contains (their children count too)"),
		daemonPID: fs.Int("daemon-pid", 0, "pid of A's daemon: measured by idle and rss-after, excluded from memory"),
	}
}

func (f targetFlags) target() *target {
	return newTarget("A", *f.name, *f.endpoint, *f.procs, *f.match, *f.daemonPID)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	b := &bench{Out: stdout, Text: stderr}
	fs.StringVar(&b.Mode, "mode", "pull", "one of "+strings.Join(modeNames(), ", "))
	fs.IntVar(&b.N, "n", 10, "measured rounds per endpoint")
	fs.IntVar(&b.Warmup, "warmup", 1, "unmeasured rounds per endpoint first (not for idle, rss-after)")
	fs.StringVar(&b.Image, "image", "shim-test/bench:8x4m", "pull: the image")
	fs.IntVar(&b.Pods, "pods", 0, "concurrent: pods started at once (default 50); memory, stats: pods running while measured (default 10, 100)")
	fs.DurationVar(&b.Timeout, "timeout", 5*time.Minute, "limit of one round")
	fs.DurationVar(&b.Settle, "settle", 2*time.Second, "memory: wait after the pods started")
	fs.DurationVar(&b.Interval, "interval", 500*time.Millisecond, "idle, rss-after: time between samples")
	fs.StringVar(&b.ProcRoot, "proc", "/proc", "procfs mount")
	fs.DurationVar(&b.Window, "window", time.Minute, "stats: length of the idle and of the polled window")
	fs.DurationVar(&b.PollInterval, "poll-interval", 10*time.Second, "stats: time between two kubelet polls")
	fs.IntVar(&b.Polls, "polls", 30, "stats: ListContainerStats calls in the burst")
	fs.StringVar(&b.Pod.Image, "ctr-image", "registry.k8s.io/e2e-test-images/busybox:1.29-2", "start/concurrent/memory: the container image (runs sleep 3600)")
	fs.StringVar(&b.Pod.PauseImage, "pause-image", "registry.k8s.io/pause:3.9", "pre-pulled before pods start (\"\" for none)")
	fs.StringVar(&b.Pod.LogRoot, "log-root", "", "pod log directories go below it (default: a temporary directory)")
	fs.StringVar(&b.Pod.CgroupParent, "cgroup-parent", "", "cgroup parent of the pods")
	fs.BoolVar(&b.Pod.HostNetwork, "host-network", false, "pods use the host network (no CNI/bridge set-up)")
	fs.StringVar(&b.Pod.RuntimeHandler, "runtime-handler", "", "RuntimeHandler of the pods")
	fs.StringVar(&b.Pod.Namespace, "pod-namespace", "shim-bench", "namespace of the pods")
	a := addTargetFlags(fs)
	var peers peerList
	addPeerFlags(fs, &peers)
	report := fs.String("report", "", "read JSON lines written by earlier runs and print a markdown table of the ratios")
	jsonOut := fs.String("json", "", "with -report: also write the records as one JSON document to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *report != "" {
		if err := writeReport(*report, *jsonOut, stdout); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}

	m, ok := modes[b.Mode]
	if !ok {
		fmt.Fprintf(stderr, "bench: unknown mode %q (want %s)\n", b.Mode, strings.Join(modeNames(), ", "))
		return 2
	}
	peerTargets, err := peers.targets()
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	targets := append([]*target{a.target()}, peerTargets...)
	if targets[0].Endpoint == "" {
		fmt.Fprintln(stderr, "bench: -endpoint is required")
		return 2
	}
	if b.N < 1 || b.Warmup < 0 {
		fmt.Fprintln(stderr, "bench: -n must be at least 1 and -warmup not negative")
		return 2
	}
	if b.Pods == 0 {
		b.Pods = map[string]int{"concurrent": 50, "memory": 10, "stats": 100}[b.Mode]
	}
	if b.Mode == "idle" || b.Mode == "rss-after" || b.Mode == "stats" {
		b.Warmup = 0 // stats: Setup makes one poll before the rounds
	}
	if b.Polls < 1 || b.Window <= 0 || b.PollInterval <= 0 {
		fmt.Fprintln(stderr, "bench: -polls, -window and -poll-interval must be positive")
		return 2
	}
	b.RunID = randomID()[:8]

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := b.run(ctx, m, targets); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		if errors.Is(err, errUnsupported) {
			return 3
		}
		return 1
	}
	return 0
}

func (b *bench) run(ctx context.Context, m mode, targets []*target) (retErr error) {
	b.Pod.SharedPID = m.SharedPID
	if m.Runtime && b.Pod.LogRoot == "" {
		dir, err := os.MkdirTemp("", "shim-bench-logs-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		b.Pod.LogRoot = dir
	}
	if b.Pod.LogRoot != "" {
		abs, err := filepath.Abs(b.Pod.LogRoot)
		if err != nil {
			return err
		}
		b.Pod.LogRoot = abs
	}
	var infos []targetInfo
	for _, t := range targets {
		defer t.close()
		if err := t.connect(ctx, 30*time.Second); err != nil {
			return err
		}
		infos = append(infos, targetInfo{Label: t.Label, Name: t.Name, Endpoint: t.Endpoint,
			Runtime: t.RuntimeName, Version: t.RuntimeVersion, DaemonPID: t.DaemonPID})
	}
	uniqueNames(targets)
	for i, t := range targets {
		infos[i].Name = t.Name
	}
	params := map[string]any{"n": b.N, "warmup": b.Warmup, "timeout": b.Timeout.String()}
	switch b.Mode {
	case "pull":
		params["image"] = b.Image
	case "start", "start-shared-pid", "concurrent", "memory", "stats", "exec", "exec-stream", "stream-throughput":
		params["ctr_image"], params["pause_image"], params["host_network"] = b.Pod.Image, b.Pod.PauseImage, b.Pod.HostNetwork
		params["shared_pid"] = b.Pod.SharedPID
		if b.Mode != "start" && b.Mode != "start-shared-pid" {
			params["pods"] = b.Pods
		}
		if b.Mode == "stats" {
			params["window"], params["poll_interval"], params["polls"] = b.Window.String(), b.PollInterval.String(), b.Polls
		}
	case "idle", "rss-after":
		params["interval"] = b.Interval.String()
	}
	if err := b.emit(record{Type: "run", Time: time.Now().UTC().Format(time.RFC3339), Params: params, Targets: infos}); err != nil {
		return err
	}
	for _, t := range targets {
		fmt.Fprintf(b.Text, "bench: %s: %s %s on %s\n", t.Name, t.RuntimeName, t.RuntimeVersion, t.Endpoint)
		if m.Teardown != nil {
			defer func() {
				cctx, cancel := cleanupCtx(ctx)
				defer cancel()
				if err := m.Teardown(cctx, b, t); err != nil {
					fmt.Fprintf(b.Text, "bench: %s: teardown: %v\n", t.Name, err)
					if retErr == nil {
						retErr = err
					}
				}
			}()
		}
		if err := m.Setup(ctx, b, t); err != nil {
			return err
		}
	}
	for w := range b.Warmup {
		for _, t := range targets {
			if _, err := m.Round(ctx, b, t, -1-w); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	// Rounds alternate between the targets: A, B, C, A, B, C, ...
	got := make([]map[string][]float64, len(targets))
	for i := range targets {
		got[i] = map[string][]float64{}
	}
	for r := range b.N {
		for i, t := range targets {
			s, err := m.Round(ctx, b, t, r)
			if err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			for k, v := range s.Metrics {
				got[i][k] = append(got[i][k], v)
			}
			round := r
			if err := b.emit(record{Type: "sample", Target: t.Name, Round: &round, Metrics: s.Metrics, Detail: s.Detail}); err != nil {
				return err
			}
			fmt.Fprintf(b.Text, "bench: %s round %d: %s %.1f %s\n", t.Name, r, m.Primary, s.Metrics[m.Primary], unitOf(m.Primary))
		}
	}
	return b.summarize(m, targets, got)
}

// metricOrder puts the primary metric first, then the others by name.
func metricOrder[V any](m mode, got map[string]V) []string {
	var keys []string
	for k := range got {
		if k != m.Primary {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if _, ok := got[m.Primary]; ok {
		keys = append([]string{m.Primary}, keys...)
	}
	return keys
}

func (b *bench) summarize(m mode, targets []*target, got []map[string][]float64) error {
	tw := tabwriter.NewWriter(b.Text, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "target\tmetric\tunit\tn\tmedian\tp90\tmin\tmax\tstddev\t\n")
	sums := make([]map[string]Summary, len(targets))
	for i, t := range targets {
		sums[i] = map[string]Summary{}
		for _, k := range metricOrder(m, got[i]) {
			s := Summarize(got[i][k])
			sums[i][k] = s
			if err := b.emit(record{Type: "summary", Target: t.Name, Metric: k, Unit: unitOf(k), Primary: k == m.Primary, Summary: &s}); err != nil {
				return err
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", t.Name, k, unitOf(k), s.N, s.Median, s.P90, s.Min, s.Max, s.Stddev)
		}
	}
	tw.Flush()
	if len(targets) < 2 {
		return nil
	}
	a, peers := targets[0], targets[1:]
	var primary *float64 // A/the better peer, median, of the primary metric
	for i, p := range peers {
		fmt.Fprintf(b.Text, "ratios %s/%s:\n", a.Name, p.Name)
		for _, k := range metricOrder(m, got[0]) {
			sa, sb := sums[0][k], sums[i+1][k]
			if sb.N == 0 {
				continue
			}
			rec := record{Type: "ratio", Metric: k, Unit: unitOf(k), Primary: k == m.Primary,
				A: a.Name, B: p.Name, MedianA: &sa.Median, MedianB: &sb.Median, P90A: &sa.P90, P90B: &sb.P90}
			if r, ok := ratio(sa.Median, sb.Median); ok {
				rec.MedianRatio = &r
			}
			if r, ok := ratio(sa.P90, sb.P90); ok {
				rec.P90Ratio = &r
			}
			if err := b.emit(rec); err != nil {
				return err
			}
			printRatio(b.Text, k, rec)
			if rec.Primary && len(peers) == 1 {
				primary = rec.MedianRatio
			}
		}
	}
	if len(peers) > 1 {
		var err error
		if primary, err = b.summarizeBetter(m, targets, sums); err != nil {
			return err
		}
	}
	if g, ok := goals[m.Name]; ok && primary != nil {
		fmt.Fprintf(b.Text, "goal: %s/better peer of %s (median) %.3f, goal %s: %s\n", a.Name, m.Primary, *primary, g, g.verdict(*primary))
	}
	return nil
}

// summarizeBetter emits, per metric, the ratio of A to the better of the
// peers that measured it, and returns the median one of the primary metric.
func (b *bench) summarizeBetter(m mode, targets []*target, sums []map[string]Summary) (primary *float64, err error) {
	a := targets[0]
	var names []string
	for _, p := range targets[1:] {
		names = append(names, p.Name)
	}
	fmt.Fprintf(b.Text, "ratios %s/better of %s:\n", a.Name, strings.Join(names, ", "))
	for _, k := range metricOrder(m, sums[0]) {
		sa := sums[0][k]
		var ps []Summary
		var pt []*target
		for i, p := range targets[1:] {
			if s := sums[i+1][k]; s.N > 0 {
				ps, pt = append(ps, s), append(pt, p)
			}
		}
		if len(ps) == 0 {
			continue
		}
		br := computeBetter(sa, ps, higherIsBetter(k))
		mp, pp := ps[br.MedianPeer], ps[br.P90Peer]
		rec := record{Type: "ratio", Metric: k, Unit: unitOf(k), Primary: k == m.Primary, Better: true,
			A: a.Name, B: pt[br.MedianPeer].Name, BP90: pt[br.P90Peer].Name,
			MedianA: &sa.Median, MedianB: &mp.Median, P90A: &sa.P90, P90B: &pp.P90}
		if br.MedianOK {
			rec.MedianRatio = &br.MedianRatio
		}
		if br.P90OK {
			rec.P90Ratio = &br.P90Ratio
		}
		if err := b.emit(rec); err != nil {
			return nil, err
		}
		printRatio(b.Text, k, rec)
		if rec.Primary {
			primary = rec.MedianRatio
		}
	}
	return primary, nil
}

func printRatio(w io.Writer, metric string, r record) {
	if r.MedianRatio == nil {
		return
	}
	fmt.Fprintf(w, "  %-28s median %.3f", metric, *r.MedianRatio)
	if r.Better {
		fmt.Fprintf(w, " (%s)", r.B)
	}
	if r.P90Ratio != nil {
		fmt.Fprintf(w, "  p90 %.3f", *r.P90Ratio)
		if r.Better {
			fmt.Fprintf(w, " (%s)", r.BP90)
		}
	}
	fmt.Fprintln(w)
}
