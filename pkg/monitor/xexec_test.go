package monitor

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
)

// TestMonitorDirectExec: with the container's exec template the monitor
// starts an exec's init itself (no helper), in the container's cgroup;
// without a usable template the helper does, with the same results and
// error classes.
func TestMonitorDirectExec(t *testing.T) {
	p := spawnMonitor(t)
	ctx := context.Background()
	b := p.newBundle(t, "sleep", "1000")
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "d1", Bundle: b.Dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "d1"}); err != nil {
		t.Fatal(err)
	}
	proc := func(args ...string) *specs.Process {
		return &specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}}
	}
	logOf := func() string {
		b, _ := os.ReadFile(filepath.Join(p.dir, "monitor.log"))
		return string(b)
	}
	helperExec := regexp.MustCompile(`helper \d+: exec d1`)

	// An exec's process is in the container's cgroup while it runs.
	procs := cgroupProcsFile(t, b.Spec.Linux.CgroupsPath)
	done := make(chan error, 1)
	go func() {
		_, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "d1", Process: proc("sleep", "3")})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; n < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the exec never showed in %s", procs)
		}
		raw, err := os.ReadFile(procs)
		if err != nil {
			t.Fatal(err)
		}
		n = len(strings.Fields(string(raw)))
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	resp, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "d1", Process: proc("sh", "-c", "echo out; echo err >&2; exit 3")})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "out\n" || string(resp.Stderr) != "err\n" || resp.ExitCode != 3 {
		t.Errorf("direct exec: %q %q %d", resp.Stdout, resp.Stderr, resp.ExitCode)
	}
	_, missingDirect := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "d1", Process: proc("no-such-binary")})
	_, badCwdDirect := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "d1", Process: &specs.Process{Args: []string{"true"}, Cwd: "rel"}})
	log := logOf()
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, ", direct:") {
			t.Log(l)
		}
	}
	if !strings.Contains(log, "exec d1: pid ") || !strings.Contains(log, ", direct") {
		t.Errorf("no direct exec in the monitor log")
	}
	if helperExec.MatchString(log) {
		t.Errorf("a helper ran an exec that had a template")
	}

	// A template the monitor cannot read: the helper starts the execs.
	tmpl := filepath.Join(p.root, "d1", libct.ExecTemplateFile)
	if _, err := os.Stat(tmpl); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmpl, []byte(libct.ExecTemplateMagic+"\n99999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err = p.c.Call(ctx, &Request{Op: OpExecSync, ID: "d1", Process: proc("sh", "-c", "echo out; echo err >&2; exit 3")})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "out\n" || string(resp.Stderr) != "err\n" || resp.ExitCode != 3 {
		t.Errorf("helper exec: %q %q %d", resp.Stdout, resp.Stderr, resp.ExitCode)
	}
	if log := logOf(); !helperExec.MatchString(log) || !strings.Contains(log, "exec template") {
		t.Errorf("a broken template did not fall back to the helper, with a warning")
	}
	_, missingHelper := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "d1", Process: proc("no-such-binary")})
	_, badCwdHelper := p.c.Call(ctx, &Request{Op: OpExecSync, ID: "d1", Process: &specs.Process{Args: []string{"true"}, Cwd: "rel"}})
	for _, c := range []struct {
		what           string
		direct, helper error
	}{{"missing binary", missingDirect, missingHelper}, {"relative cwd", badCwdDirect, badCwdHelper}} {
		if c.direct == nil || c.helper == nil || errdefs.Class(c.direct) != errdefs.Class(c.helper) {
			t.Errorf("%s: direct %v, helper %v", c.what, c.direct, c.helper)
		}
	}
	if !errdefs.IsInvalidArgument(badCwdDirect) {
		t.Errorf("relative cwd: %v", badCwdDirect)
	}
}

// cgroupProcsFile is the cgroup.procs file of cgroup path in one
// hierarchy the container is in (v1: pids; v2: the unified one).
func cgroupProcsFile(t *testing.T, path string) string {
	t.Helper()
	for _, dir := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		f := filepath.Join(dir, path, "cgroup.procs")
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	t.Fatalf("no cgroup.procs for %s", path)
	return ""
}

// TestMonitorDirectExecRacesExit: execs started while the container dies
// fail with FailedPrecondition (kubelet's exec probes race container
// exits), never with the error of a half-joined namespace.
func TestMonitorDirectExecRacesExit(t *testing.T) {
	p := spawnMonitor(t)
	ctx := context.Background()
	for round := 0; round < 3; round++ {
		id := "r" + string(rune('0'+round))
		bundle := p.bundle(t, "sleep", "1000")
		if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: id, Bundle: bundle}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: id}); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 3)
		for g := 0; g < 3; g++ {
			go func() {
				for {
					_, err := p.c.Call(ctx, &Request{Op: OpExecSync, ID: id, Process: &specs.Process{Args: []string{"true"}, Cwd: "/", Env: []string{"PATH=/bin"}}})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(60+round*50) * time.Millisecond)
		if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: id, Signal: 9}); err != nil {
			t.Fatal(err)
		}
		for g := 0; g < 3; g++ {
			if err := <-errs; !errdefs.IsFailedPrecondition(err) {
				t.Errorf("round %d: exec while the container died: %v", round, err)
			}
		}
		waitFor(t, func() bool { _, err := ReadExitRecord(bundle); return err == nil })
		if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: id}); err != nil {
			t.Fatal(err)
		}
	}
}
