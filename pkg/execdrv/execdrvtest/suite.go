// Package execdrvtest is the test suite every execdrv.Driver passes. It
// needs root and a static busybox; the test binary must dispatch libct's
// init (see libct.Init) and be the subreaper of the containers it starts.
package execdrvtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/libct/testbundle"
	"golang.org/x/sys/unix"
)

var seq atomic.Int64

// Run runs the suite against the driver newDriver returns (one per test,
// with its own state root).
func Run(t *testing.T, newDriver func(t *testing.T) execdrv.Driver) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	tests := []struct {
		name string
		fn   func(*testing.T, execdrv.Driver)
	}{
		{"Lifecycle", testLifecycle},
		{"ExitCodeAndOutput", testExitCodeAndOutput},
		{"KillAll", testKillAll},
		{"Exec", testExec},
		{"PauseResume", testPauseResume},
		{"UpdateAndStats", testUpdateAndStats},
		{"NotFound", testNotFound},
		{"DeleteRunningNeedsForce", testDeleteRunningNeedsForce},
		{"CreateFailureLeavesNothing", testCreateFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newDriver(t)) })
	}
}

func id(t *testing.T) string {
	return fmt.Sprintf("edt%d-%d", os.Getpid(), seq.Add(1))
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func bundle(t *testing.T, script string) string {
	b := testbundle.New(t, "/bin/sh", "-c", script)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	return b.Dir
}

// wait reaps pid (the caller is its parent or subreaper).
func wait(t *testing.T, pid int) int {
	t.Helper()
	var ws unix.WaitStatus
	done := make(chan struct{})
	go func() {
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("pid %d did not exit", pid)
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func create(t *testing.T, d execdrv.Driver, script string, out *os.File) (string, int) {
	t.Helper()
	cid := id(t)
	pid, err := d.Create(ctx(t), cid, bundle(t, script), execdrv.CreateOpts{IO: execdrv.IO{Stdout: out, Stderr: out}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { d.Delete(context.Background(), cid, true) })
	return cid, pid
}

func status(t *testing.T, d execdrv.Driver, cid string) execdrv.Status {
	t.Helper()
	st, err := d.State(ctx(t), cid)
	if err != nil {
		t.Fatalf("state: %v", err)
	}
	return st.Status
}

func testLifecycle(t *testing.T, d execdrv.Driver) {
	cid, pid := create(t, d, "sleep 30", nil)
	st, err := d.State(ctx(t), cid)
	if err != nil || st.Status != execdrv.StatusCreated || st.Pid != pid || st.ID != cid {
		t.Fatalf("state after create: %+v %v (pid %d)", st, err, pid)
	}
	if err := d.Start(ctx(t), cid); err != nil {
		t.Fatal(err)
	}
	if s := status(t, d, cid); s != execdrv.StatusRunning {
		t.Fatalf("after start: %s", s)
	}
	if err := d.Start(ctx(t), cid); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second start: %v", err)
	}
	if err := d.Kill(ctx(t), cid, unix.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if code := wait(t, pid); code != 137 {
		t.Errorf("exit code %d, want 137", code)
	}
	if s := status(t, d, cid); s != execdrv.StatusStopped {
		t.Fatalf("after kill: %s", s)
	}
	if err := d.Delete(ctx(t), cid, false); err != nil {
		t.Fatal(err)
	}
	if _, err := d.State(ctx(t), cid); !errdefs.IsNotFound(err) {
		t.Errorf("state after delete: %v", err)
	}
}

func testExitCodeAndOutput(t *testing.T, d execdrv.Driver) {
	r, w, _ := os.Pipe()
	defer r.Close()
	cid, pid := create(t, d, "echo out; echo err >&2; exit 42", w)
	w.Close()
	if err := d.Start(ctx(t), cid); err != nil {
		t.Fatal(err)
	}
	if code := wait(t, pid); code != 42 {
		t.Errorf("exit %d", code)
	}
	b, _ := io.ReadAll(r)
	if string(b) != "out\nerr\n" {
		t.Errorf("output %q", b)
	}
}

func testKillAll(t *testing.T, d execdrv.Driver) {
	cid, pid := create(t, d, "sleep 60 & sleep 60 & wait", nil)
	d.Start(ctx(t), cid)
	var pids []int
	for i := 0; i < 100 && len(pids) < 3; i++ {
		time.Sleep(20 * time.Millisecond)
		pids, _ = d.Pids(ctx(t), cid)
	}
	if len(pids) != 3 {
		t.Fatalf("pids %v", pids)
	}
	if err := d.Kill(ctx(t), cid, unix.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	wait(t, pid)
	for i := 0; i < 100; i++ {
		if pids, _ = d.Pids(ctx(t), cid); len(pids) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(pids) != 0 {
		t.Errorf("pids after kill --all: %v", pids)
	}
}

func testExec(t *testing.T, d execdrv.Driver) {
	cid, _ := create(t, d, "sleep 30", nil)
	d.Start(ctx(t), cid)
	r, w, _ := os.Pipe()
	defer r.Close()
	p := &specs.Process{Args: []string{"/bin/sh", "-c", "hostname; id -u; exit 5"}, Cwd: "/", Env: []string{"PATH=/bin"},
		User: specs.User{UID: 1000, GID: 1000}}
	pid, err := d.Exec(ctx(t), cid, p, execdrv.IO{Stdout: w, Stderr: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if code := wait(t, pid); code != 5 {
		t.Errorf("exec exit %d", code)
	}
	b, _ := io.ReadAll(r)
	if string(b) != "shim\n1000\n" {
		t.Errorf("exec output %q", b)
	}
	if _, err := d.Exec(ctx(t), cid, &specs.Process{Args: []string{"/no/such"}, Cwd: "/"}, execdrv.IO{}); err == nil {
		t.Errorf("exec of a missing binary succeeded")
	}
}

func testPauseResume(t *testing.T, d execdrv.Driver) {
	cid, _ := create(t, d, "sleep 30", nil)
	d.Start(ctx(t), cid)
	if err := d.Pause(ctx(t), cid); err != nil {
		t.Fatal(err)
	}
	if s := status(t, d, cid); s != execdrv.StatusPaused {
		t.Fatalf("after pause: %s", s)
	}
	if err := d.Resume(ctx(t), cid); err != nil {
		t.Fatal(err)
	}
	if s := status(t, d, cid); s != execdrv.StatusRunning {
		t.Fatalf("after resume: %s", s)
	}
	if err := d.Resume(ctx(t), cid); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("resume of running: %v", err)
	}
}

func testUpdateAndStats(t *testing.T, d execdrv.Driver) {
	cid, _ := create(t, d, "sleep 30", nil)
	d.Start(ctx(t), cid)
	lim := int64(40 << 20)
	if err := d.Update(ctx(t), cid, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &lim}}); err != nil {
		t.Fatal(err)
	}
	s, err := d.Stats(ctx(t), cid)
	if err != nil {
		t.Fatal(err)
	}
	if s.Memory.Limit != uint64(lim) || s.Pids.Current != 1 || s.Memory.Usage == 0 {
		t.Errorf("stats: limit %d pids %d usage %d", s.Memory.Limit, s.Pids.Current, s.Memory.Usage)
	}
	bad := int64(-9)
	if err := d.Update(ctx(t), cid, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &bad}}); err == nil {
		t.Errorf("update with a negative memory limit succeeded")
	}
}

func testNotFound(t *testing.T, d execdrv.Driver) {
	c := ctx(t)
	checks := map[string]error{
		"state":  func() error { _, err := d.State(c, "nope"); return err }(),
		"start":  d.Start(c, "nope"),
		"kill":   d.Kill(c, "nope", unix.SIGTERM, false),
		"delete": d.Delete(c, "nope", false),
		"pause":  d.Pause(c, "nope"),
		"exec": func() error {
			_, err := d.Exec(c, "nope", &specs.Process{Args: []string{"true"}, Cwd: "/"}, execdrv.IO{})
			return err
		}(),
	}
	for op, err := range checks {
		if !errdefs.IsNotFound(err) {
			t.Errorf("%s of a missing container: %v", op, err)
		}
	}
}

func testDeleteRunningNeedsForce(t *testing.T, d execdrv.Driver) {
	cid, pid := create(t, d, "sleep 30", nil)
	d.Start(ctx(t), cid)
	if err := d.Delete(ctx(t), cid, false); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("delete running without force: %v", err)
	}
	go unix.Wait4(pid, nil, 0, nil)
	if err := d.Delete(ctx(t), cid, true); err != nil {
		t.Fatal(err)
	}
	if _, err := d.State(ctx(t), cid); !errdefs.IsNotFound(err) {
		t.Errorf("state after forced delete: %v", err)
	}
}

func testCreateFailure(t *testing.T, d execdrv.Driver) {
	b := testbundle.New(t, "/no/such/binary")
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	cid := id(t)
	if _, err := d.Create(ctx(t), cid, b.Dir, execdrv.CreateOpts{}); err == nil {
		d.Delete(context.Background(), cid, true)
		t.Fatal("create with a missing binary succeeded")
	}
	if _, err := d.State(ctx(t), cid); !errdefs.IsNotFound(err) {
		t.Errorf("state after failed create: %v", err)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/shim/" + cid); err == nil {
		t.Errorf("cgroup left behind")
	}
}
