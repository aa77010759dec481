// Command bench-oci measures `shim oci run` against runc on a busybox
// /bin/true bundle: n runs of each in sequence, alternating which runtime
// goes first in each round, in the same process and the same run. It
// reports wall time per run and the peak RSS of the runtime's process tree
// (ru_maxrss from wait4: the CLI and the processes it reaped), as ratios
// shim/runc, and writes a markdown report.
//
//	go run ./hack/bench-oci -n 100 -out docs/benchmarks-oci.md
//	go run ./hack/bench-oci -shim /path/to/shim -runc /usr/sbin/runc
//
// It needs root and busybox-static. It never judges a time: it reports.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

type sample struct {
	wall  time.Duration
	rssKB int64
}

type runtimeUnderTest struct {
	name string
	argv []string // binary and the args before the global flags
	root string
	runs []sample
}

func main() {
	n := flag.Int("n", 100, "runs per runtime")
	warm := flag.Int("warmup", 3, "untimed runs per runtime first")
	shimBin := flag.String("shim", "", "shim binary (default: `make build`, then a copy of bin/shim)")
	runcBin := flag.String("runc", "", "runc binary (default: runc in PATH)")
	out := flag.String("out", "", "markdown report to write (default: stdout only)")
	flag.Parse()
	if os.Getuid() != 0 {
		fail("bench-oci: needs root")
	}
	if !testbundle.Available() {
		fail("bench-oci: needs busybox-static at " + testbundle.Busybox)
	}
	work, err := os.MkdirTemp("", "bench-oci-")
	check(err)
	cleanups = append(cleanups, func() { os.RemoveAll(work) })
	defer runCleanups()
	if *runcBin == "" {
		*runcBin, err = exec.LookPath("runc")
		check(err)
	}
	built := ""
	if *shimBin == "" {
		*shimBin, built = buildShim(work)
	}

	bundle := filepath.Join(work, "bundle")
	check(testbundle.Rootfs(filepath.Join(bundle, "rootfs")))
	spec := testbundle.Spec("/bin/true")
	data, err := json.MarshalIndent(spec, "", "  ")
	check(err)
	check(os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644))

	// State on tmpfs for both, as in production (/run).
	stateBase, err := os.MkdirTemp("/run", "bench-oci-")
	check(err)
	cleanups = append(cleanups, func() { os.RemoveAll(stateBase) })
	rts := []*runtimeUnderTest{
		{name: "shim", argv: []string{*shimBin, "oci"}, root: filepath.Join(stateBase, "shim")},
		{name: "runc", argv: []string{*runcBin}, root: filepath.Join(stateBase, "runc")},
	}
	for i := 0; i < *warm; i++ {
		for _, rt := range rts {
			runOnce(rt, bundle, fmt.Sprintf("warm%d", i))
		}
	}
	for i := 0; i < *n; i++ {
		order := rts
		if i%2 == 1 {
			order = []*runtimeUnderTest{rts[1], rts[0]}
		}
		for _, rt := range order {
			rt.runs = append(rt.runs, runOnce(rt, bundle, fmt.Sprintf("b%d", i)))
		}
	}
	report := render(rts, *n, built, *shimBin, *runcBin)
	fmt.Print(report)
	if *out != "" {
		check(os.WriteFile(*out, []byte(report), 0o644))
	}
}

func runOnce(rt *runtimeUnderTest, bundle, id string) sample {
	args := append(append([]string(nil), rt.argv[1:]...), "--root", rt.root, "run", "--bundle", bundle, id)
	cmd := exec.Command(rt.argv[0], args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		fail(fmt.Sprintf("%s run %s: %v: %s", rt.name, id, err, stderr.String()))
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var rss int64
	if ru != nil {
		rss = ru.Maxrss
	}
	return sample{wall: wall, rssKB: rss}
}

// buildShim builds the product binary as a release has it (`make build`:
// static, the lean runtime binary embedded, to which `shim oci` is handed
// before the daemon's Go start) and measures a private copy of it. A
// plain `go build ./cmd/shim` lacks the embedded binary and measures the
// whole daemon's start instead.
func buildShim(work string) (string, string) {
	repo := repoRoot()
	cmd := exec.Command("make", "build")
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		fail(fmt.Sprintf("make build: %v\n%s", err, b))
	}
	// cp, not a read into this process: a runtime's ru_maxrss starts at
	// this process's resident set (exec records the vfork'd mm's peak).
	out := filepath.Join(work, "shim")
	if b, err := exec.Command("cp", filepath.Join(repo, "bin", "shim"), out).CombinedOutput(); err != nil {
		fail(fmt.Sprintf("copy bin/shim: %v\n%s", err, b))
	}
	return out, "make build"
}

func repoRoot() string {
	b, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	check(err)
	return strings.TrimSpace(string(b))
}

type stats struct {
	mean, median, p90, min time.Duration
	rssMedian              int64
}

func summarize(s []sample) stats {
	w := make([]time.Duration, len(s))
	r := make([]int64, len(s))
	var sum time.Duration
	for i, x := range s {
		w[i], r[i] = x.wall, x.rssKB
		sum += x.wall
	}
	sort.Slice(w, func(i, j int) bool { return w[i] < w[j] })
	sort.Slice(r, func(i, j int) bool { return r[i] < r[j] })
	p90 := w[int(math.Ceil(0.9*float64(len(w))))-1]
	return stats{mean: sum / time.Duration(len(s)), median: w[len(w)/2], p90: p90, min: w[0], rssMedian: r[len(r)/2]}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func render(rts []*runtimeUnderTest, n int, built, shimBin, runcBin string) string {
	s, r := summarize(rts[0].runs), summarize(rts[1].runs)
	var b strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	runcVer, _ := exec.Command(runcBin, "--version").Output()
	fmt.Fprintf(&b, "# `shim oci run` vs runc\n\n")
	fmt.Fprintf(&b, "Measured by `go run ./hack/bench-oci -n %d` on %s (%s, %d CPUs, kernel %s, cgroup %s), %s.\n",
		n, host, runtime.GOARCH, runtime.NumCPU(), strings.TrimSpace(string(kernel)), cgroupMode(), time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Bundle: busybox-static rootfs, `runc spec`-like config running `/bin/true` (pid, net, ipc, uts, mount, cgroup namespaces; masked/read-only paths; read-only root).\n")
	fmt.Fprintf(&b, "Each round runs `RUNTIME --root /run/... run --bundle B ID` once per runtime, alternating which goes first; state on tmpfs for both.\n")
	fmt.Fprintf(&b, "shim: %s (%s); runc: %s.\n\n", shimBin, orDefault(built, "given"), strings.SplitN(strings.TrimSpace(string(runcVer)), "\n", 2)[0])
	fmt.Fprintf(&b, "| | shim oci run | runc run | shim / runc |\n| --- | --- | --- | --- |\n")
	row := func(name string, a, c time.Duration) {
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f |\n", name, ms(a), ms(c), float64(a)/float64(c))
	}
	row("mean wall time", s.mean, r.mean)
	row("median wall time", s.median, r.median)
	row("p90 wall time", s.p90, r.p90)
	row("fastest run", s.min, r.min)
	fmt.Fprintf(&b, "| median peak RSS (ru_maxrss of the runtime's process tree) | %d KiB | %d KiB | %.2f |\n\n",
		s.rssMedian, r.rssMedian, float64(s.rssMedian)/float64(r.rssMedian))
	fmt.Fprintf(&b, "Goal: shim ≤ 0.5× runc's time, peak RSS below runc's.\n")
	return b.String()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func cgroupMode() string {
	var st syscall.Statfs_t
	if syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == 0x63677270 {
		return "v2"
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		return "v1 (hybrid)"
	}
	return "v1"
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

// cleanups run at exit, also when fail exits early.
var cleanups []func()

func runCleanups() {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	runCleanups()
	os.Exit(1)
}
