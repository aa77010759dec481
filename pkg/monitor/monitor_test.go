package monitor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

// built is a binary the tests build once per run.
type built struct {
	once sync.Once
	path string
	err  error
}

// get builds pkg (relative to this directory) into name with the go build
// flags given, once, and returns its path.
func (b *built) get(t *testing.T, name, pkg string, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "shim-monitor-test")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		args := append(append([]string{"build", "-o", b.path}, flags...), pkg)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = errors.New(string(out))
		}
	})
	if b.err != nil {
		t.Fatalf("building %s: %v", name, b.err)
	}
	return b.path
}

var shimBuilt built

func shimBinary(t *testing.T) string {
	// SHIM_MONITOR_BUILDFLAGS="-asan" runs the tests on a monitor built
	// with AddressSanitizer (make monitor-asan).
	return shimBuilt.get(t, "shim", "../../cmd/shim", strings.Fields(os.Getenv("SHIM_MONITOR_BUILDFLAGS"))...)
}

type testPod struct {
	c       *Client
	dir     string
	root    string
	cgroups []string
}

var cgroupSeq atomic.Int64

func spawnMonitor(t *testing.T, extra ...string) *testPod {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	base := t.TempDir()
	dir := filepath.Join(base, "pods", strings.Repeat("p", 64)) // a long path: sockets must still work
	root := filepath.Join(base, "libct")
	os.MkdirAll(dir, 0o700)
	exe := shimBinary(t) // built once, before the spawn's clock starts
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Spawn(ctx, SpawnOpts{Exe: exe, PodID: "pod1", Dir: dir, Args: append([]string{"--runtime-root", root, "--log-level", "debug"}, extra...)})
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "monitor.log"))
		t.Fatalf("spawn: %v\n%s", err, b)
	}
	p := &testPod{c: c, dir: dir, root: root}
	t.Cleanup(func() {
		if _, err := c.Call(context.Background(), &Request{Op: OpShutdown}); err != nil {
			t.Logf("monitor shutdown: %v", err)
		}
		// Whatever the shutdown left (a test that failed half way, a
		// monitor that died) is killed: no test leaves a process behind.
		for _, cg := range p.cgroups {
			killCgroup(t, cg)
			ctrls, _ := os.ReadDir("/sys/fs/cgroup")
			for _, d := range ctrls {
				os.Remove(filepath.Join("/sys/fs/cgroup", d.Name(), cg))
			}
			os.Remove(filepath.Join("/sys/fs/cgroup", cg))
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "monitor.log"))
			t.Logf("monitor log:\n%s", b)
		}
	})
	return p
}

func (p *testPod) bundle(t *testing.T, args ...string) string {
	b := p.newBundle(t, args...)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	return b.Dir
}

// newBundle returns a bundle running args in a cgroup of its own, removed
// after the test.
func (p *testPod) newBundle(t *testing.T, args ...string) *testbundle.Bundle {
	b := testbundle.New(t, args...)
	cg := fmt.Sprintf("/shim-monitor-test/%d-%d", os.Getpid(), cgroupSeq.Add(1))
	b.Spec.Linux.CgroupsPath = cg
	p.cgroups = append(p.cgroups, cg)
	return b
}

func TestMonitorNotAChild(t *testing.T) {
	p := spawnMonitor(t)
	resp, err := p.c.Call(context.Background(), &Request{Op: OpState})
	if err != nil {
		t.Fatal(err)
	}
	st := procStatus(t, resp.MonitorPid)
	if ppid, _ := strconv.Atoi(st["PPid"]); ppid == os.Getpid() {
		t.Fatalf("the monitor (pid %d) is a child of its spawner", resp.MonitorPid)
	}
	// The monitor is the C one: a Go process has several threads.
	if st["Threads"] != "1" {
		t.Errorf("the monitor has %s threads, want 1 (the C monitor)", st["Threads"])
	}
	if resp.Containers != nil {
		t.Errorf("a new monitor has containers: %+v", resp.Containers)
	}
}

// anonKB is the anonymous memory of a process.
func anonKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "Anonymous:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no Anonymous line in smaps_rollup")
	return 0
}

// procStatus reads /proc/pid/status as a map.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func TestMonitorRunLogExit(t *testing.T) {
	p := spawnMonitor(t)
	ctx := context.Background()
	bundle := p.bundle(t, "sh", "-c", "echo hello; echo oops >&2; exit 3")
	logPath := filepath.Join(t.TempDir(), "c.log")

	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := subscribeEvents(t, ectx, p.dir)

	resp, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "c1", Bundle: bundle, LogPath: logPath})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Pid <= 0 {
		t.Fatalf("pid %d", resp.Pid)
	}
	// The helper's times (the daemon's start timeline): the operation
	// measured in the helper, within the helper's time the monitor saw
	// (one clock, CLOCK_MONOTONIC, read in two processes in order).
	if resp.HelperNs <= 0 || resp.OpNs <= 0 || resp.OpNs > resp.HelperNs {
		t.Errorf("create: helper %dns, operation %dns", resp.HelperNs, resp.OpNs)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "c1", Bundle: bundle}); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second create: %v", err)
	}
	if resp, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "c1"}); err != nil {
		t.Fatal(err)
	} else if resp.HelperNs <= 0 || resp.OpNs <= 0 || resp.OpNs > resp.HelperNs {
		t.Errorf("start: helper %dns, operation %dns", resp.HelperNs, resp.OpNs)
	}
	select {
	case ev := <-events:
		if ev.ID != "c1" || ev.Exit.Code != 3 || ev.Exit.Pid != resp.Pid {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit event")
	}
	rec, err := ReadExitRecord(bundle)
	if err != nil || rec.Code != 3 || rec.FinishedAt.IsZero() {
		t.Fatalf("exit record %+v %v", rec, err)
	}
	b, _ := os.ReadFile(logPath)
	log := string(b)
	if !strings.Contains(log, " stdout F hello\n") || !strings.Contains(log, " stderr F oops\n") {
		t.Errorf("log:\n%s", log)
	}
	st, _ := p.c.Call(ctx, &Request{Op: OpState})
	if len(st.Containers) != 1 || st.Containers[0].Exited == nil {
		t.Errorf("state %+v", st)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "c1"}); !errdefs.IsNotFound(err) {
		t.Fatalf("start after delete: %v", err)
	}
}

func TestMonitorExecSyncAndKill(t *testing.T) {
	p := spawnMonitor(t)
	ctx := context.Background()
	bundle := p.bundle(t, "sleep", "1000")
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "c2", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "c2"}); err != nil {
		t.Fatal(err)
	}
	proc := func(args ...string) *specs.Process {
		return &specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}}
	}
	resp, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "c2", Process: proc("sh", "-c", "echo out; echo err >&2; exit 7")})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "out\n" || string(resp.Stderr) != "err\n" || resp.ExitCode != 7 {
		t.Errorf("exec: %q %q %d", resp.Stdout, resp.Stderr, resp.ExitCode)
	}
	// Output over the cap is truncated, and says so; the monitor gives
	// the memory it took back.
	mon := p.monitorPid(t)
	anon0 := anonKB(t, mon)
	resp, err = p.c.Call(ctx, &Request{Op: OpExecSync, ID: "c2", Process: proc("sh", "-c", "head -c 17000000 /dev/zero")})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Stdout) != maxExecOutput || !resp.Truncated {
		t.Errorf("big output: %d bytes, truncated %v", len(resp.Stdout), resp.Truncated)
	}
	if strings.Contains(os.Getenv("SHIM_MONITOR_BUILDFLAGS"), "-asan") {
		// AddressSanitizer keeps freed memory in quarantine by design.
		t.Log("the monitor's memory after a big exec is not checked under AddressSanitizer (make race checks it)")
	} else if anon := anonKB(t, mon); anon > anon0+64 {
		t.Errorf("anonymous memory of the monitor: %d KB before a 16 MiB exec, %d KB after", anon0, anon)
	}
	// A timeout kills the command.
	start := time.Now()
	_, err = p.c.Call(ctx, &Request{Op: OpExecSync, ID: "c2", Process: proc("sleep", "60"), Timeout: 200 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatal("timed-out command was not killed")
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "c2", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if rec, err := ReadExitRecord(bundle); err == nil {
			if rec.Code != 137 || !rec.Signaled {
				t.Errorf("exit %+v", rec)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no exit record after SIGKILL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "c2", Process: proc("true")}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("exec in an exited container: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "c2"}); err != nil {
		t.Fatal(err)
	}
}

// killCgroup kills every process of the test cgroup cg (in the pids or
// memory hierarchy, or the unified one) and waits until they are gone.
func killCgroup(t *testing.T, cg string) {
	for _, h := range []string{"pids", "memory", ""} {
		procs := filepath.Join("/sys/fs/cgroup", h, cg, "cgroup.procs")
		for i := 0; i < 100; i++ {
			b, err := os.ReadFile(procs)
			if err != nil || len(strings.TrimSpace(string(b))) == 0 {
				break
			}
			if i == 0 {
				t.Logf("cgroup %s still has processes after the monitor's shutdown: %s", cg, strings.Fields(string(b)))
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
