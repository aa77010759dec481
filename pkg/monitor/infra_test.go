package monitor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/nspin"
)

// infraBundle writes the bundle of an infra process for spec (its cgroup
// made, removed after the test) and returns its directory.
func (p *testPod) infraBundle(t *testing.T, id string, spec *specs.Spec) string {
	t.Helper()
	bundle := t.TempDir()
	root := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	spec.Linux.CgroupsPath = fmt.Sprintf("/shim-monitor-test/%d-%d", os.Getpid(), cgroupSeq.Add(1))
	p.cgroups = append(p.cgroups, spec.Linux.CgroupsPath)
	procs, err := libct.CreateCgroup(spec, id)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := RenderInfraPlan(spec, true, root, procs)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteInfraPlan(bundle, plan); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// pinNetNS pins a new network namespace for the test's infra processes.
func pinNetNS(t *testing.T) string {
	t.Helper()
	netns := filepath.Join(t.TempDir(), "net")
	if err := nspin.Pin(context.Background(), nspin.Net, netns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nspin.Unpin(netns) })
	return netns
}

func infraSpec(netns string, oom int) *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{
			User:            specs.User{UID: 65534, GID: 65533, AdditionalGids: []uint32{5, 7}},
			NoNewPrivileges: true, OOMScoreAdj: &oom,
			Capabilities: &specs.LinuxCapabilities{Bounding: []string{}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: netns},
				{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
			},
			Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
		},
	}
}

// TestMonitorInfra: the monitor's own infra process is PID 1 of a new PID
// namespace, in the given network namespace and cgroup, as the plan's
// user, with an empty read-only root, no capabilities, no_new_privs and a
// seccomp filter; it reaps the orphans of its namespace, exits 0 on
// SIGTERM with the exit recorded, and is deleted like a container.
func TestMonitorInfra(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	netns := pinNetNS(t)
	// Raising oom_score_adj needs no privilege; the test's own plus one.
	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	oom, _ := strconv.Atoi(strings.TrimSpace(string(own)))
	oom = min(oom+1, 1000)
	spec := infraSpec(netns, oom)
	bundle := p.infraBundle(t, "infra1", spec)
	resp, err := p.c.Call(ctx, &Request{Op: OpInfra, ID: "infra1", Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	pid := resp.Pid
	st := procStatus(t, pid)
	if f := strings.Fields(st["NSpid"]); len(f) != 2 || f[1] != "1" {
		t.Errorf("NSpid %q: not PID 1 of a new namespace", st["NSpid"])
	}
	for k, want := range map[string]string{
		"Uid": "65534\t65534\t65534\t65534", "Gid": "65533\t65533\t65533\t65533", "Groups": "5 7",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
	} {
		if st[k] != want {
			t.Errorf("%s: %q, want %q", k, st[k], want)
		}
	}
	// Named as the pause image's process, the monitor's arguments gone.
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(b) != "pause\n" {
		t.Errorf("comm %q, want pause", b)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(b) != "/pause\x00" {
		t.Errorf("cmdline %q, want /pause", b)
	}
	var want, got syscall.Stat_t
	syscall.Stat(netns, &want)
	syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got)
	if want.Ino != got.Ino {
		t.Errorf("network namespace %d, want the pinned %d", got.Ino, want.Ino)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); strings.TrimSpace(string(b)) != strconv.Itoa(oom) {
		t.Errorf("oom_score_adj %q, want %d", b, oom)
	}
	if raw, err := os.ReadFile(cgroupProcsFile(t, spec.Linux.CgroupsPath)); err != nil || strings.TrimSpace(string(raw)) != strconv.Itoa(pid) {
		t.Errorf("cgroup.procs of its cgroup: %q %v, want %d", raw, err, pid)
	}
	rootDir := fmt.Sprintf("/proc/%d/root", pid)
	if ents, err := os.ReadDir(rootDir); err != nil || len(ents) != 0 {
		t.Errorf("its root has %d entries (%v), want an empty one", len(ents), err)
	}
	if err := os.WriteFile(filepath.Join(rootDir, "x"), nil, 0o600); err == nil {
		t.Error("its root is writable")
	}
	if ents, _ := os.ReadDir(filepath.Join(bundle, "rootfs")); len(ents) != 0 {
		t.Errorf("the bundle's rootfs has %d entries on the host", len(ents))
	}

	// An orphan of its namespace is reaped by it.
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-p", "--", "sh", "-c", "sleep 1 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	inner := strings.TrimSpace(string(out))
	orphan := 0
	waitForf(t, func() bool {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			n, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			s := procStatus(t, n)
			if f := strings.Fields(s["NSpid"]); len(f) == 2 && f[1] == inner && s["PPid"] == strconv.Itoa(pid) {
				orphan = n
				return true
			}
		}
		return false
	}, func() string { return "the orphan " + inner + " under the infra process" })
	waitForf(t, func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", orphan))
		return os.IsNotExist(err)
	}, func() string { return "the orphan's exit to be reaped" })

	// What the monitor's own process does not do.
	for _, r := range []*Request{
		{Op: OpStart, ID: "infra1"},
		{Op: OpUpdate, ID: "infra1", Resources: &specs.LinuxResources{}},
		{Op: OpExecSync, ID: "infra1", Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}},
	} {
		if _, err := p.c.Call(ctx, r); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("%s of the infra process: %v, want FailedPrecondition", r.Op, err)
		}
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpInfra, ID: "infra1", Bundle: bundle}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("a second infra1: %v", err)
	}

	// SIGTERM: it exits 0, recorded like a container's exit.
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "infra1", Signal: int(syscall.SIGTERM), All: true}); err != nil {
		t.Fatal(err)
	}
	var rec *ExitRecord
	waitForf(t, func() bool {
		rec, err = ReadExitRecord(bundle)
		return err == nil
	}, func() string { return "its exit record" })
	if rec.Exit.Code != 0 || rec.Exit.Signal != 0 || rec.Exit.Pid != pid {
		t.Errorf("exit record %+v", rec)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "infra1"}); err != nil {
		t.Fatal(err)
	}
	if st, err := p.c.Call(ctx, &Request{Op: OpState}); err != nil || len(st.Containers) != 0 {
		t.Errorf("state after the delete: %+v %v", st, err)
	}
	if err := libct.RemoveCgroup(ctx, spec, "infra1"); err != nil {
		t.Error(err)
	}
}

// TestMonitorInfraDelete: a delete kills a running infra process and
// returns once its exit is recorded; a plan it cannot follow fails with
// the class of the error and leaves no process or container behind.
func TestMonitorInfraDelete(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	netns := pinNetNS(t)
	spec := infraSpec(netns, 1000)
	bundle := p.infraBundle(t, "i1", spec)
	resp, err := p.c.Call(ctx, &Request{Op: OpInfra, ID: "i1", Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "i1", Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(resp.Pid, 0); err == nil {
		t.Errorf("infra process %d still runs after its delete", resp.Pid)
	}
	if rec, err := ReadExitRecord(bundle); err != nil || rec.Exit.Signal != int(syscall.SIGKILL) {
		t.Errorf("exit record %+v %v, want SIGKILL", rec, err)
	}

	// A namespace that is not there: NotFound, nothing left.
	bad := infraSpec(filepath.Join(t.TempDir(), "missing"), 1000)
	badBundle := p.infraBundle(t, "i2", bad)
	_, err = p.c.Call(ctx, &Request{Op: OpInfra, ID: "i2", Bundle: badBundle})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "joining namespace") {
		t.Errorf("infra with a missing namespace: %v, want NotFound", err)
	}
	// A plan that is not one: InvalidArgument.
	os.WriteFile(filepath.Join(badBundle, InfraPlanFile), []byte(InfraPlanMagic+"\nroot /x\nuid 1\ngid 1\nnew pid\nnew mount\nfrobnicate 1\n"), 0o600)
	if _, err := p.c.Call(ctx, &Request{Op: OpInfra, ID: "i2", Bundle: badBundle}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a bad plan: %v, want InvalidArgument", err)
	}
	os.Remove(filepath.Join(badBundle, InfraPlanFile))
	if _, err := p.c.Call(ctx, &Request{Op: OpInfra, ID: "i2", Bundle: badBundle}); !errdefs.IsNotFound(err) {
		t.Errorf("no plan: %v, want NotFound", err)
	}
	if st, err := p.c.Call(ctx, &Request{Op: OpState}); err != nil || len(st.Containers) != 0 {
		t.Errorf("state after the failures: %+v %v", st, err)
	}
	waitForf(t, func() bool {
		raw, _ := os.ReadFile(cgroupProcsFile(t, bad.Linux.CgroupsPath))
		return len(strings.TrimSpace(string(raw))) == 0
	}, func() string { return "the failed infra process to be gone from its cgroup" })
	for _, s := range []*specs.Spec{spec, bad} {
		if err := libct.RemoveCgroup(context.Background(), s, "x"); err != nil {
			t.Error(err)
		}
	}
}

// TestRenderInfraPlan: what the monitor's infra process cannot do is
// ErrNotImplemented (the daemon runs the sandbox image then).
func TestRenderInfraPlan(t *testing.T) {
	ok := infraSpec("/run/netns/x", -998)
	plan, err := RenderInfraPlan(ok, true, "/b/rootfs", []string{"/sys/fs/cgroup/pids/x/cgroup.procs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{InfraPlanMagic, "root /b/rootfs", "new pid", "new mount", "new cgroup", "join /run/netns/x",
		"cgroup /sys/fs/cgroup/pids/x/cgroup.procs", "uid 65534", "gid 65533", "groups 5 7", "oom -998"} {
		if !strings.Contains("\n"+string(plan), "\n"+l+"\n") {
			t.Errorf("plan lacks %q:\n%s", l, plan)
		}
	}
	for name, change := range map[string]func(s *specs.Spec){
		"localhost seccomp": func(s *specs.Spec) {},
		"user namespace": func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		},
		"id mappings":  func(s *specs.Spec) { s.Linux.UIDMappings = []specs.LinuxIDMapping{{Size: 1}} },
		"apparmor":     func(s *specs.Spec) { s.Process.ApparmorProfile = "p" },
		"selinux":      func(s *specs.Spec) { s.Process.SelinuxLabel = "l" },
		"capabilities": func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_KILL"} },
		"rlimits":      func(s *specs.Spec) { s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE"}} },
		"sysctls":      func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"a": "b"} },
		"hooks":        func(s *specs.Spec) { s.Hooks = &specs.Hooks{} },
		"new privs":    func(s *specs.Spec) { s.Process.NoNewPrivileges = false },
		"host pid": func(s *specs.Spec) {
			s.Linux.Namespaces = s.Linux.Namespaces[1:]
		},
	} {
		s := infraSpec("/run/netns/x", 0)
		change(s)
		if _, err := RenderInfraPlan(s, name != "localhost seccomp", "/b/rootfs", nil); !errdefs.Is(err, errdefs.ErrNotImplemented) {
			t.Errorf("%s: %v, want NotImplemented", name, err)
		}
	}
	if _, err := RenderInfraPlan(ok, true, "relative", nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a relative root: %v", err)
	}
}
