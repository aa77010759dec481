package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run creates and starts a container from bundle.
func (p *testPod) run(t *testing.T, id, bundle, logPath string) int {
	t.Helper()
	resp, err := p.c.Call(ctxT(t), &Request{Op: OpCreate, ID: id, Bundle: bundle, LogPath: logPath})
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpStart, ID: id}); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return resp.Pid
}

// waitExit waits for the exit record of a bundle.
func waitExit(t *testing.T, bundle string) *ExitRecord {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, err := ReadExitRecord(bundle)
		if err == nil {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("no exit record in %s: %v", bundle, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *testPod) monitorPid(t *testing.T) int {
	t.Helper()
	resp, err := p.c.Call(ctxT(t), &Request{Op: OpState})
	if err != nil {
		t.Fatal(err)
	}
	return resp.MonitorPid
}

// children lists the monitor's child processes as pid -> state letter.
func children(t *testing.T, pid int) map[int]byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]byte{}
	for _, f := range strings.Fields(string(b)) {
		c, _ := strconv.Atoi(f)
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		s := string(st)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
			out[c] = s[i+2]
		}
	}
	return out
}

// TestMonitorCRILogFormat checks the records of a container's log: line
// splitting at 16 KiB, an exact 16 KiB line, an empty line, a last line
// without a newline, both streams, RFC3339Nano UTC timestamps.
func TestMonitorCRILogFormat(t *testing.T) {
	p := spawnMonitor(t)
	long := strings.Repeat("x", maxLogLine*2+10)
	exact := strings.Repeat("y", maxLogLine)
	script := fmt.Sprintf(`printf 'hello\n\nworld\n'; head -c %d /dev/zero | tr '\0' x; echo; `+
		`head -c %d /dev/zero | tr '\0' y; echo; echo oops >&2; printf tail-no-newline`, len(long), len(exact))
	bundle := p.bundle(t, "sh", "-c", script)
	logPath := filepath.Join(t.TempDir(), "0.log")
	p.run(t, "log1", bundle, logPath)
	if rec := waitExit(t, bundle); rec.Code != 0 {
		t.Fatalf("exit %+v", rec)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "\n") {
		t.Errorf("log does not end with a newline")
	}
	type record struct{ stream, tag, text string }
	var got []record
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.SplitN(l, " ", 4)
		if len(f) != 4 {
			t.Fatalf("bad record %.80q", l)
		}
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil || !strings.HasSuffix(f[0], "Z") || time.Since(ts) > time.Minute || time.Since(ts) < 0 {
			t.Errorf("bad timestamp %q: %v", f[0], err)
		}
		got = append(got, record{f[1], f[2], f[3]})
	}
	want := []record{
		{"stdout", "F", "hello"},
		{"stdout", "F", ""},
		{"stdout", "F", "world"},
		{"stdout", "P", long[:maxLogLine]},
		{"stdout", "P", long[maxLogLine : 2*maxLogLine]},
		{"stdout", "F", long[2*maxLogLine:]},
		{"stdout", "F", exact},
		{"stdout", "P", "tail-no-newline"},
	}
	var stdout []record
	sawErr := false
	for _, r := range got {
		if r.stream == "stderr" {
			sawErr = r == record{"stderr", "F", "oops"}
			continue
		}
		stdout = append(stdout, r)
	}
	if !sawErr {
		t.Errorf("no stderr record in %d records", len(got))
	}
	if len(stdout) != len(want) {
		t.Fatalf("got %d stdout records, want %d", len(stdout), len(want))
	}
	for i := range want {
		if stdout[i] != want[i] {
			t.Errorf("record %d: got %s %s %.40q (%d bytes), want %s %s %.40q (%d bytes)", i,
				stdout[i].stream, stdout[i].tag, stdout[i].text, len(stdout[i].text), want[i].stream, want[i].tag, want[i].text, len(want[i].text))
		}
	}
}

func TestMonitorReopenLog(t *testing.T) {
	p := spawnMonitor(t)
	bundle := p.bundle(t, "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.02; done")
	logPath := filepath.Join(t.TempDir(), "0.log")
	p.run(t, "rot", bundle, logPath)
	waitFor(t, func() bool { b, _ := os.ReadFile(logPath); return strings.Contains(string(b), " tick 3\n") })
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpReopenLog, ID: "rot"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(logPath); return strings.Count(string(b), " tick ") >= 2 })
	old, _ := os.ReadFile(logPath + ".1")
	cur, _ := os.ReadFile(logPath)
	lastOld := strings.Split(strings.TrimSuffix(string(old), "\n"), "\n")
	firstNew := strings.SplitN(string(cur), "\n", 2)[0]
	// Nothing lost nor repeated across the rotation.
	n1, _ := strconv.Atoi(strings.TrimPrefix(lastOld[len(lastOld)-1][strings.Index(lastOld[len(lastOld)-1], " tick ")+1:], "tick "))
	n2, _ := strconv.Atoi(strings.TrimPrefix(firstNew[strings.Index(firstNew, " tick ")+1:], "tick "))
	if n1 == 0 || n2 != n1+1 {
		t.Errorf("last line before the rotation %d, first after %d", n1, n2)
	}
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpReopenLog, ID: "nope"}); !errdefs.IsNotFound(err) {
		t.Errorf("reopen of an unknown container: %v", err)
	}
	// The log's directory is gone: the error says so, the old file stays in use.
	os.RemoveAll(filepath.Dir(logPath))
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpReopenLog, ID: "rot"}); !errdefs.IsNotFound(err) {
		t.Errorf("reopen into a missing directory: %v", err)
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	waitForf(t, f, func() string { return "" })
}

// waitForf is waitFor that says what it waited for when it times out.
func waitForf(t *testing.T, f func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("timed out", what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMonitorDeleteForceAndKillAll(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	b1 := p.bundle(t, "sleep", "1000")
	pid1 := p.run(t, "d1", b1, "")
	// A running container is not deleted without force.
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "d1"}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete of a running container: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "d1", Force: true}); err != nil {
		t.Fatal(err)
	}
	if rec, err := ReadExitRecord(b1); err != nil || rec.Code != 137 || rec.Pid != pid1 {
		t.Errorf("exit record after a forced delete: %+v %v", rec, err)
	}
	if err := syscall.Kill(pid1, 0); err == nil {
		t.Errorf("pid %d still exists after a forced delete", pid1)
	}
	st, err := p.c.Call(ctx, &Request{Op: OpState})
	if err != nil || len(st.Containers) != 0 {
		t.Errorf("state after delete: %+v %v", st, err)
	}

	// kill --all reaches every process of the container.
	b2 := p.bundle(t, "sh", "-c", "trap '' TERM; sleep 1000 & wait")
	p.run(t, "k1", b2, "")
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "k1", Signal: int(syscall.SIGKILL), All: true}); err != nil {
		t.Fatal(err)
	}
	if rec := waitExit(t, b2); rec.Code != 137 || !rec.Signaled || rec.Signal != 9 {
		t.Errorf("exit after kill --all: %+v", rec)
	}
	// Killing an exited container is not an error; an unknown one is.
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "k1", Signal: 15}); err != nil {
		t.Errorf("kill of an exited container: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "nope", Signal: 15}); !errdefs.IsNotFound(err) {
		t.Errorf("kill of an unknown container: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "k1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "k1"}); !errdefs.IsNotFound(err) {
		t.Errorf("second delete: %v", err)
	}
}

func TestMonitorCreateErrors(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "e1"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("create without a bundle: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "e1", Bundle: t.TempDir() + "/nope"}); !errdefs.IsNotFound(err) {
		t.Errorf("create from a missing bundle: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "e1", Bundle: t.TempDir() + "/nope", Tty: true}); !errdefs.IsNotFound(err) {
		t.Errorf("create with a tty from a missing bundle: %v", err)
	}
	bad := p.bundle(t, "no-such-command")
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "e1", Bundle: bad}); err == nil {
		t.Errorf("create of a missing command succeeded")
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "e1", Bundle: bad, LogPath: "/nonexistent/dir/0.log"}); !errdefs.IsNotFound(err) {
		t.Errorf("create with a log in a missing directory: %v", err)
	}
	// Failed creates leave nothing: the id can be used again.
	st, _ := p.c.Call(ctx, &Request{Op: OpState})
	if len(st.Containers) != 0 {
		t.Errorf("failed creates left %+v", st.Containers)
	}
	good := p.bundle(t, "true")
	p.run(t, "e1", good, "")
	if rec := waitExit(t, good); rec.Code != 0 {
		t.Errorf("exit %+v", rec)
	}
}

func TestMonitorExecSyncErrors(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	bundle := p.bundle(t, "sleep", "1000")
	p.run(t, "x1", bundle, "")
	if _, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "x1"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("exec without a process: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "x1", Process: &specs.Process{Cwd: "/"}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("exec without args: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "nope", Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}}); !errdefs.IsNotFound(err) {
		t.Errorf("exec in an unknown container: %v", err)
	}
	// Output survives a command that exits at once, and exit codes of signals.
	resp, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "x1", Process: &specs.Process{Args: []string{"sh", "-c", "printf abc; kill -9 $$"}, Cwd: "/", Env: []string{"PATH=/bin"}}})
	if err != nil || string(resp.Stdout) != "abc" || resp.ExitCode != 137 {
		t.Errorf("exec killed by a signal: %+v %v", resp, err)
	}
	// A client that goes away takes its command with it. The children
	// file of /proc can miss a child that another one's exit races with:
	// the container's init, a child all along, is added by hand.
	mon := p.monitorPid(t)
	before := children(t, mon)
	st, err := p.c.Call(ctx, &Request{Op: OpState})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Containers {
		before[c.Pid] = 'S'
	}
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = p.c.Call(cctx, &Request{Op: OpExecSync, ID: "x1", Process: &specs.Process{Args: []string{"sleep", "999"}, Cwd: "/", Env: []string{"PATH=/bin"}}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled exec: %v", err)
	}
	var left []string
	waitForf(t, func() bool {
		left = nil
		for pid := range children(t, mon) {
			if _, ok := before[pid]; !ok {
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				left = append(left, string(st))
			}
		}
		return len(left) == 0
	}, func() string { return fmt.Sprintf("the monitor's children left: %q", left) })
}

// memoryLimitFile is where this host keeps the memory limit of cgroup
// path: memory.max on a unified (cgroup v2) host, memory.limit_in_bytes of
// the v1 memory hierarchy otherwise; "" when the host has neither.
func memoryLimitFile(path string) string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return filepath.Join("/sys/fs/cgroup", path, "memory.max")
	}
	if fi, err := os.Stat("/sys/fs/cgroup/memory"); err == nil && fi.IsDir() {
		return filepath.Join("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes")
	}
	return ""
}

func TestMonitorUpdate(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	b := p.newBundle(t, "sleep", "1000")
	limitFile := memoryLimitFile(b.Spec.Linux.CgroupsPath)
	if limitFile == "" {
		t.Skip("needs a host with a memory cgroup controller (a v1 memory hierarchy or unified cgroup v2)")
	}
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	p.run(t, "u1", b.Dir, "")
	lim := int64(64 << 20)
	if _, err := p.c.Call(ctx, &Request{Op: OpUpdate, ID: "u1", Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &lim}}}); err != nil {
		t.Fatal(err)
	}
	// The host has the controller: a missing file is the container's
	// cgroup being wrong, a failure.
	got, err := os.ReadFile(limitFile)
	if err != nil {
		t.Fatalf("the container's memory limit: %v", err)
	}
	if strings.TrimSpace(string(got)) != strconv.FormatInt(lim, 10) {
		t.Errorf("memory.limit_in_bytes = %s, want %d", got, lim)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpUpdate, ID: "u1"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("update without resources: %v", err)
	}
	neg := int64(-5)
	if _, err := p.c.Call(ctx, &Request{Op: OpUpdate, ID: "u1", Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &neg, Period: new(uint64)}}}); err == nil {
		t.Errorf("update with a bad cpu quota succeeded")
	}
}

func TestMonitorOOMKilled(t *testing.T) {
	p := spawnMonitor(t)
	b := p.newBundle(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
	lim := int64(32 << 20)
	b.Spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &lim, Swap: &lim}
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	p.run(t, "oom", b.Dir, "")
	rec := waitExit(t, b.Dir)
	if !rec.OOMKilled || rec.Code != 137 {
		t.Errorf("exit of an OOM-killed container: %+v", rec)
	}
	// And a container that was not: no OOM flag.
	b2 := p.bundle(t, "sh", "-c", "exit 1")
	p.run(t, "fine", b2, "")
	if rec := waitExit(t, b2); rec.OOMKilled || rec.Code != 1 {
		t.Errorf("exit: %+v", rec)
	}
}

func TestMonitorEventsToEverySubscriber(t *testing.T) {
	p := spawnMonitor(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var chans [3]<-chan Event
	for i := range chans {
		chans[i] = subscribeEvents(t, ctx, p.dir)
	}
	// A subscriber that never reads must not hold the others up.
	stuck := dialEvents(t, p.dir)
	defer stuck.Close()
	bundle := p.bundle(t, "sh", "-c", "exit 5")
	pid := p.run(t, "ev", bundle, "")
	for i, ch := range chans {
		select {
		case ev := <-ch:
			if ev.ID != "ev" || ev.Exit.Code != 5 || ev.Exit.Pid != pid || ev.Exit.FinishedAt.IsZero() {
				t.Errorf("subscriber %d: %+v", i, ev)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("subscriber %d got no event", i)
		}
	}
}

// TestMonitorReapsOrphans runs a container without its own PID namespace:
// its orphans are reparented to the monitor, which must reap them.
func TestMonitorReapsOrphans(t *testing.T) {
	p := spawnMonitor(t)
	b := p.newBundle(t, "sh", "-c", "sleep 0.3 & sleep 0.3 & exit 0")
	var ns []specs.LinuxNamespace
	for _, n := range b.Spec.Linux.Namespaces {
		if n.Type != specs.PIDNamespace {
			ns = append(ns, n)
		}
	}
	b.Spec.Linux.Namespaces = ns
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	mon := p.monitorPid(t)
	p.run(t, "orph", b.Dir, "")
	if rec := waitExit(t, b.Dir); rec.Code != 0 {
		t.Fatalf("exit %+v", rec)
	}
	waitFor(t, func() bool { return len(children(t, mon)) == 0 })
}

func TestMonitorShutdown(t *testing.T) {
	p := spawnMonitor(t)
	b1 := p.bundle(t, "sleep", "1000")
	b2 := p.bundle(t, "sh", "-c", "trap '' TERM; sleep 1000")
	p.run(t, "s1", b1, "")
	p.run(t, "s2", b2, "")
	mon := p.monitorPid(t)
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpShutdown}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{b1, b2} {
		if rec, err := ReadExitRecord(b); err != nil || rec.Code != 137 {
			t.Errorf("exit record after shutdown: %+v %v", rec, err)
		}
	}
	if _, err := os.Stat(filepath.Join(p.dir, SocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after shutdown: %v", err)
	}
	waitFor(t, func() bool { return syscall.Kill(mon, 0) != nil })
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpState}); !errdefs.IsUnavailable(err) {
		t.Errorf("call after shutdown: %v", err)
	}
}

// monitorUsage is what a monitor holds: open fds and resident heap (KB).
func monitorUsage(t *testing.T, pid int) (fds, heapKB int) {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	inHeap := false
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			inHeap = strings.HasSuffix(l, "[heap]")
		} else if inHeap && len(f) == 3 && f[0] == "Rss:" {
			heapKB, _ = strconv.Atoi(f[1])
		}
	}
	return len(ents), heapKB
}

// TestMonitorCyclesLeakNothing runs containers through create, exec,
// exit and delete in one monitor: its fds, heap and children must not grow.
func TestMonitorCyclesLeakNothing(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	mon := p.monitorPid(t)
	logs := t.TempDir()
	cycle := func(i int) {
		id := fmt.Sprintf("cyc%d", i)
		bundle := p.bundle(t, "sh", "-c", "echo start; read x; echo done")
		resp, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: id, Bundle: bundle, LogPath: filepath.Join(logs, id+".log"), Stdin: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: id}); err != nil {
			t.Fatal(err)
		}
		out, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: id, Process: &specs.Process{Args: []string{"echo", id}, Cwd: "/", Env: []string{"PATH=/bin"}}})
		if err != nil || string(out.Stdout) != id+"\n" {
			t.Fatalf("exec: %+v %v", out, err)
		}
		if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: id, Signal: 9}); err != nil {
			t.Fatal(err)
		}
		if rec := waitExit(t, bundle); rec.Pid != resp.Pid {
			t.Fatalf("exit %+v", rec)
		}
		if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		cycle(i)
	}
	// A reply can reach the client a moment before the monitor closes
	// the connection: counts are taken once they settle.
	settled := func() (fds, heap int) {
		fds, heap = monitorUsage(t, mon)
		for i := 0; i < 20; i++ {
			time.Sleep(10 * time.Millisecond)
			f, h := monitorUsage(t, mon)
			fds, heap = min(fds, f), min(heap, h)
		}
		return fds, heap
	}
	fds0, heap0 := settled()
	for i := 5; i < 35; i++ {
		cycle(i)
	}
	fds1, heap1 := settled()
	if fds1 != fds0 || heap1 > heap0+8 {
		t.Errorf("after 30 cycles: fds %d -> %d, heap %d KB -> %d KB", fds0, fds1, heap0, heap1)
	}
	waitFor(t, func() bool { return len(children(t, mon)) == 0 })
	st, _ := p.c.Call(ctx, &Request{Op: OpState})
	if len(st.Containers) != 0 {
		t.Errorf("containers left: %+v", st.Containers)
	}
}

// TestMonitorRunc runs containers through an external OCI runtime: its
// init and exec'd processes are reparented to the monitor when runc exits.
func TestMonitorRunc(t *testing.T) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("needs runc (hack/install-deps.sh installs it)")
	}
	p := spawnMonitor(t, "--runtime-binary", runc)
	ctx := ctxT(t)
	mon := p.monitorPid(t)
	bundle := p.bundle(t, "sh", "-c", "echo from runc; sleep 1000")
	logPath := filepath.Join(t.TempDir(), "0.log")
	pid := p.run(t, "r1", bundle, logPath)
	// It is, once the helper that started it has exited.
	waitFor(t, func() bool { _, ok := children(t, mon)[pid]; return ok })
	resp, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "r1", Process: &specs.Process{Args: []string{"sh", "-c", "echo hi; exit 4"}, Cwd: "/", Env: []string{"PATH=/bin"}}})
	if err != nil || string(resp.Stdout) != "hi\n" || resp.ExitCode != 4 {
		t.Errorf("exec: %+v %v", resp, err)
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(logPath); return strings.Contains(string(b), " stdout F from runc\n") })
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "r1", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if rec := waitExit(t, bundle); rec.Code != 137 || rec.Pid != pid {
		t.Errorf("exit %+v", rec)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "r1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(children(t, mon)) == 0 })
}

// helperChildren lists the monitor's helper processes.
func helperChildren(t *testing.T, mon int) []int {
	var out []int
	for pid := range children(t, mon) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(b), "monitor-helper") {
			out = append(out, pid)
		}
	}
	return out
}

// TestMonitorParkedCreateHelper covers the create helper that waits to do
// the start: a start after it gave up, a delete or a kill instead of a
// start, and a helper that dies while it waits.
func TestMonitorParkedCreateHelper(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	mon := p.monitorPid(t)
	create := func(id, bundle string) int {
		t.Helper()
		// The helpers of earlier requests are gone first (a start helper
		// may outlive its container by a moment): then the only helper
		// after the create is the parked one.
		waitFor(t, func() bool { return len(helperChildren(t, mon)) == 0 })
		resp, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: id, Bundle: bundle})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Pid
	}
	// The helper gives up after a while; the start still works.
	b1 := p.bundle(t, "sh", "-c", "exit 6")
	create("late", b1)
	if len(helperChildren(t, mon)) != 1 {
		t.Errorf("no parked helper after a create: %v", children(t, mon))
	}
	waitFor(t, func() bool { return len(helperChildren(t, mon)) == 0 })
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "late"}); err != nil {
		t.Fatal(err)
	}
	if rec := waitExit(t, b1); rec.Code != 6 {
		t.Errorf("exit %+v", rec)
	}
	// A delete instead of a start.
	b2 := p.bundle(t, "sleep", "1000")
	pid2 := create("del", b2)
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "del", Force: true}); err != nil {
		t.Fatal(err)
	}
	if rec, err := ReadExitRecord(b2); err != nil || rec.Pid != pid2 {
		t.Errorf("exit record of a container deleted before its start: %+v %v", rec, err)
	}
	// A kill instead of a start: the exit is seen at once, not when the
	// helper would have given up.
	b3 := p.bundle(t, "sleep", "1000")
	create("kill", b3)
	start := time.Now()
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "kill", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if rec := waitExit(t, b3); rec.Code != 137 {
		t.Errorf("exit %+v", rec)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("exit recorded %v after the kill", d)
	}
	// A helper that dies while it waits: the start is done by another.
	b4 := p.bundle(t, "sh", "-c", "exit 9")
	create("crash", b4)
	hs := helperChildren(t, mon)
	if len(hs) != 1 {
		t.Fatalf("helpers %v", hs)
	}
	syscall.Kill(hs[0], syscall.SIGKILL)
	waitFor(t, func() bool { return len(helperChildren(t, mon)) == 0 })
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "crash"}); err != nil {
		t.Fatal(err)
	}
	if rec := waitExit(t, b4); rec.Code != 9 {
		t.Errorf("exit %+v", rec)
	}
	// The same, the start racing with the helper's death.
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("race%d", i)
		b := p.bundle(t, "sh", "-c", "exit 3")
		create(id, b)
		hs := helperChildren(t, mon)
		if len(hs) != 1 {
			t.Fatalf("helpers %v", hs)
		}
		syscall.Kill(hs[0], syscall.SIGKILL)
		if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: id}); err != nil {
			t.Fatal(err)
		}
		if rec := waitExit(t, b); rec.Code != 3 {
			t.Errorf("exit %+v", rec)
		}
	}
}

// TestMonitorHelperDies kills a create helper in the middle of its work:
// the create fails with a typed error and the monitor goes on.
func TestMonitorHelperDies(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	mon := p.monitorPid(t)
	b := p.newBundle(t, "true")
	b.Spec.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "3"}}}}
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "dies", Bundle: b.Dir})
		errc <- err
	}()
	var hs []int
	waitFor(t, func() bool { hs = helperChildren(t, mon); return len(hs) == 1 })
	time.Sleep(200 * time.Millisecond) // in the hook by now
	syscall.Kill(hs[0], syscall.SIGKILL)
	if err := <-errc; !errdefs.Is(err, errdefs.ErrInternal) {
		t.Fatalf("create whose helper was killed: %v", err)
	}
	st, err := p.c.Call(ctx, &Request{Op: OpState})
	if err != nil || len(st.Containers) != 0 {
		t.Fatalf("state: %+v %v", st, err)
	}
	// What the helper left (its hook, the init) is reaped as orphans.
	waitFor(t, func() bool { return len(children(t, mon)) == 0 })
	good := p.bundle(t, "true")
	p.run(t, "after", good, "")
	if rec := waitExit(t, good); rec.Code != 0 {
		t.Errorf("exit %+v", rec)
	}
}

// dialEvents subscribes to the monitor's events in dir: the request is
// sent when it returns, so every exit after it is announced on the
// connection (Client.Events sends it from its own goroutine, at no time a
// test knows).
func dialEvents(t *testing.T, dir string) net.Conn {
	t.Helper()
	conn, err := dialUnix(filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(`{"op":"events"}` + "\n")); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	return conn
}

// subscribeEvents is dialEvents with the events decoded until ctx ends.
func subscribeEvents(t *testing.T, ctx context.Context, dir string) <-chan Event {
	t.Helper()
	conn := dialEvents(t, dir)
	context.AfterFunc(ctx, func() { conn.Close() })
	ch := make(chan Event, 4)
	go func() {
		defer conn.Close()
		dec := json.NewDecoder(conn)
		for {
			var ev Event
			if dec.Decode(&ev) != nil {
				return
			}
			ch <- ev
		}
	}()
	return ch
}
