package monitor

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
)

// TestMonitorDirectCreate: with libct's create template the monitor starts
// a container's init itself (no helper), keeps its init pipe, and starts
// it by opening the exec fifo; libct then sees the container as the
// helper's Create leaves it (state, exec template, cgroup), and its
// errors keep their classes.
func TestMonitorDirectCreate(t *testing.T) {
	p := spawnMonitor(t)
	ctx := context.Background()
	logOf := func() string {
		b, _ := os.ReadFile(filepath.Join(p.dir, "monitor.log"))
		return string(b)
	}
	prepare := func(id string, args ...string) string {
		t.Helper()
		b := p.newBundle(t, args...)
		if err := b.Write(); err != nil {
			t.Fatal(err)
		}
		ok, err := libct.PrepareCreate(ctx, p.root, id, b.Spec, b.Dir, true)
		if err != nil || !ok {
			t.Fatalf("prepare %s: %v %v", id, ok, err)
		}
		return b.Dir
	}

	bundle := prepare("dc1", "sh", "-c", "echo hello; exit 7")
	logPath := filepath.Join(t.TempDir(), "dc1.log")
	resp, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "dc1", Bundle: bundle, LogPath: logPath, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Pid <= 0 || resp.OpNs <= 0 || resp.HelperNs != resp.OpNs {
		t.Errorf("direct create: pid %d, helper %d ns, op %d ns", resp.Pid, resp.HelperNs, resp.OpNs)
	}
	if err := libct.CommitCreate(p.root, "dc1", resp.Pid); err != nil {
		t.Fatal(err)
	}
	c, err := libct.Load(p.root, "dc1")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c.State(); st.Status != libct.StatusCreated || st.Pid != resp.Pid {
		t.Errorf("libct state after a direct create: %s pid %d, want created pid %d", st.Status, st.Pid, resp.Pid)
	}
	for _, f := range []string{libct.ExecTemplateFile} {
		if _, err := os.Stat(filepath.Join(p.root, "dc1", f)); err != nil {
			t.Errorf("after commit: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(p.root, "dc1", libct.CreateTemplateFile)); !os.IsNotExist(err) {
		t.Errorf("the create template is kept after the commit: %v", err)
	}
	if err := libct.CommitCreate(p.root, "dc1", resp.Pid); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second commit: %v", err)
	}
	// The init is in the container's cgroup, waiting.
	procs := cgroupProcsFile(t, c.Spec().Linux.CgroupsPath)
	if raw, _ := os.ReadFile(procs); strings.TrimSpace(string(raw)) != strconv.Itoa(resp.Pid) {
		t.Errorf("cgroup %s holds %q, want the init %d", procs, raw, resp.Pid)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "dc1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "dc1"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second start: %v", err)
	}
	rec := waitExit(t, bundle)
	if rec.Code != 7 {
		t.Errorf("exit %+v, want code 7", rec.Exit)
	}
	if raw, _ := os.ReadFile(logPath); !strings.Contains(string(raw), " stdout F hello\n") {
		t.Errorf("log: %q", raw)
	}
	log := logOf()
	for _, want := range []string{"create dc1: pid ", "start dc1: pid "} {
		if !strings.Contains(log, want) {
			t.Errorf("monitor log lacks %q", want)
		}
	}
	if regexp.MustCompile(`helper \d+: (create|start) dc1`).MatchString(log) {
		t.Errorf("a helper created or started a direct container")
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "dc1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(p.root, "dc1")); !os.IsNotExist(err) {
		t.Errorf("state dir after delete: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(procs)); !os.IsNotExist(err) {
		t.Errorf("cgroup after delete: %v", err)
	}

	// An init that dies before its start: the start fails, as libct's.
	bundle = prepare("dc2", "sleep", "100")
	resp, err = p.c.Call(ctx, &Request{Op: OpCreate, ID: "dc2", Bundle: bundle, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := libct.CommitCreate(p.root, "dc2", resp.Pid); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(resp.Pid, syscall.SIGKILL)
	waitExit(t, bundle)
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "dc2"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("start of a dead init: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "dc2"}); err != nil {
		t.Fatal(err)
	}

	// The init's own error, with its class, as the helper reports it;
	// nothing of the monitor's is left.
	bundle = prepare("dc3", "no-such-binary")
	_, direct := p.c.Call(ctx, &Request{Op: OpCreate, ID: "dc3", Bundle: bundle, Direct: true})
	c3, err := libct.Load(p.root, "dc3")
	if err != nil {
		t.Fatal(err)
	}
	if err := c3.Delete(ctx, true); err != nil {
		t.Fatal(err)
	}
	_, helper := p.c.Call(ctx, &Request{Op: OpCreate, ID: "dc3", Bundle: bundle})
	if direct == nil || helper == nil || errdefs.Class(direct) != errdefs.Class(helper) {
		t.Errorf("missing binary: direct %v, helper %v", direct, helper)
	}
	if st, err := p.c.Call(ctx, &Request{Op: OpState}); err != nil || len(st.Containers) != 0 || !st.Direct {
		t.Errorf("state after failed creates: %+v %v", st, err)
	}

	// No template: NotFound; a terminal: InvalidArgument.
	b4 := p.newBundle(t, "true")
	if err := b4.Write(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "dc4", Bundle: b4.Dir, Direct: true}); !errdefs.IsNotFound(err) {
		t.Errorf("direct create without a template: %v", err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "dc4", Bundle: b4.Dir, Direct: true, Tty: true}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("direct create with a terminal: %v", err)
	}
	b4.Spec.Process.Terminal = true
	if ok, err := libct.PrepareCreate(ctx, p.root, "dc4", b4.Spec, b4.Dir, true); ok || err != nil {
		t.Errorf("prepare of a spec with a terminal: %v %v, want false", ok, err)
	}
	if _, err := os.Stat(filepath.Join(p.root, "dc4")); !os.IsNotExist(err) {
		t.Errorf("a refused prepare made a state dir: %v", err)
	}
}

var initBuilt built

// initBinary builds cmd/shim-init (the container init the daemon embeds)
// once.
func initBinary(t *testing.T) string {
	return initBuilt.get(t, "shim-init", "../../cmd/shim-init", "-tags", "shim_init")
}

// TestMonitorInitBinary: a monitor given --init-binary runs it, not its
// own binary, as a direct create's init and a direct exec's, and has its
// helpers run it for theirs; one whose init binary cannot be opened
// leaves creates to the helper (not_implemented, which the daemon retries
// through the helper), whose inits then run the monitor's own binary.
func TestMonitorInitBinary(t *testing.T) {
	bin := initBinary(t)
	p := spawnMonitor(t, "--init-binary", bin)
	ctx := context.Background()
	b := p.newBundle(t, "sleep", "100")
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	if ok, err := libct.PrepareCreate(ctx, p.root, "ib1", b.Spec, b.Dir, true); err != nil || !ok {
		t.Fatalf("prepare: %v %v", ok, err)
	}
	resp, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "ib1", Bundle: b.Dir, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := libct.CommitCreate(p.root, "ib1", resp.Pid); err != nil {
		t.Fatal(err)
	}
	// Until the start the init is the init binary (through the
	// monitor's detached overlay of its directory).
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(resp.Pid) + "/exe"); err != nil || filepath.Base(exe) != filepath.Base(bin) {
		t.Errorf("the init runs %q (%v), want %s", exe, err, bin)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "ib1"}); err != nil {
		t.Fatal(err)
	}
	er, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "ib1", Process: &specs.Process{Args: []string{"sh", "-c", "echo in; exit 3"}, Cwd: "/"}})
	if err != nil || er.ExitCode != 3 || string(er.Stdout) != "in\n" {
		t.Errorf("exec: %+v %v", er, err)
	}
	log := func() string {
		b, _ := os.ReadFile(filepath.Join(p.dir, "monitor.log"))
		return string(b)
	}()
	for _, want := range []string{"container inits run " + bin, "exec ib1: pid "} {
		if !strings.Contains(log, want) {
			t.Errorf("monitor log lacks %q", want)
		}
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "ib1", Force: true}); err != nil {
		t.Fatal(err)
	}
	// Through the helper (libct's Create) too.
	b3 := p.bundle(t, "sleep", "100")
	resp, err = p.c.Call(ctx, &Request{Op: OpCreate, ID: "ib3", Bundle: b3})
	if err != nil {
		t.Fatal(err)
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(resp.Pid) + "/exe"); err != nil || filepath.Base(exe) != filepath.Base(bin) {
		t.Errorf("the helper's init runs %q (%v), want %s", exe, err, bin)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "ib3", Force: true}); err != nil {
		t.Fatal(err)
	}

	// An init binary that is not there: no direct create.
	q := spawnMonitor(t, "--init-binary", filepath.Join(t.TempDir(), "missing"))
	b2 := q.newBundle(t, "true")
	if err := b2.Write(); err != nil {
		t.Fatal(err)
	}
	if ok, err := libct.PrepareCreate(ctx, q.root, "ib2", b2.Spec, b2.Dir, true); err != nil || !ok {
		t.Fatalf("prepare: %v %v", ok, err)
	}
	if _, err := q.c.Call(ctx, &Request{Op: OpCreate, ID: "ib2", Bundle: b2.Dir, Direct: true}); !errdefs.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("direct create without the init binary: %v, want not implemented", err)
	}
	c, err := libct.Load(q.root, "ib2")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, true); err != nil {
		t.Fatal(err)
	}
	resp, err = q.c.Call(ctx, &Request{Op: OpCreate, ID: "ib2", Bundle: b2.Dir})
	if err != nil {
		t.Fatalf("create through the helper without the init binary: %v", err)
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(resp.Pid) + "/exe"); err != nil || filepath.Base(exe) != filepath.Base(shimBinary(t)) {
		t.Errorf("the helper's init runs %q (%v), want the monitor's own binary", exe, err)
	}
	if _, err := q.c.Call(ctx, &Request{Op: OpDelete, ID: "ib2", Force: true}); err != nil {
		t.Fatal(err)
	}
}
