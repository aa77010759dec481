package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// nsLink is the namespace a process is in ("net:[4026531840]").
func nsLink(t *testing.T, pid int, kind string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		t.Fatalf("namespace %s of %d: %v", kind, pid, err)
	}
	return l
}

// TestNamespaceMatrix runs, under every runtime handler (the native
// executor and runc), a pod for every namespace mode kubelet sends
// (network and IPC: POD or NODE; pid: POD for shareProcessNamespace,
// CONTAINER, NODE for hostPID), with two containers and, where kubelet
// would (pid CONTAINER), an ephemeral-style container targeting the first
// one's pid namespace. It checks each namespace really is what was asked by
// comparing /proc/<pid>/ns links with the host's and between containers.
// The containers carry kubelet's oom_score_adj of a Guaranteed pod (-997),
// below the daemon's: a host without CAP_SYS_RESOURCE cannot lower it.
func TestNamespaceMatrix(t *testing.T) {
	runc, rerr := exec.LookPath("runc")
	cfg := bridgeConfig("shimtm", "10.213.77.0/24") + "[image]\nsandbox_image = \"PAUSE\"\n"
	if rerr == nil {
		cfg += fmt.Sprintf("[runtime.handlers.runc]\nbinary = %q\n", runc)
	}
	e := newTestEnv(t, cfg)
	t.Cleanup(func() {
		// The bridge and table the daemon made for this test.
		exec.Command("ip", "link", "del", "shimtm").Run()
		exec.Command("nft", "delete", "table", "ip", "shimtm").Run()
	})
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	pause := reg.push(t, "test/pause:1", busyboxImage(t, []string{"sleep", "1000000"}, nil))
	b, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(b), "PAUSE", pause, 1)), 0o600)
	d := e.start()
	d.pull(t, img)
	before := residue(t, e, d)

	self := os.Getpid()
	host := map[string]string{}
	for _, k := range []string{"net", "ipc", "pid", "uts", "mnt"} {
		host[k] = nsLink(t, self, k)
	}
	modes := []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_NODE}
	pidModes := []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_NODE}
	for _, handler := range []string{"", "runc"} {
		hname := handler
		if hname == "" {
			hname = "native"
		}
		t.Run(hname, func(t *testing.T) {
			if handler == "runc" && rerr != nil {
				t.Skipf("runc not installed (hack/install-deps.sh installs it): %v", rerr)
			}
			i := 0
			for _, netMode := range modes {
				for _, ipcMode := range modes {
					for _, pidMode := range pidModes {
						i++
						name := fmt.Sprintf("net-%s_ipc-%s_pid-%s", netMode, ipcMode, pidMode)
						t.Run(name, func(t *testing.T) {
							nso := &runtimeapi.NamespaceOption{Network: netMode, Ipc: ipcMode, Pid: pidMode}
							checkNSCombination(t, d, e, handler, fmt.Sprintf("nsm-%s-%d", hname, i), img, nso, host)
						})
					}
				}
			}
		})
	}
	d.removeAllPods(t)
	if r := residue(t, e, d); r != before {
		t.Errorf("left behind:\n%s", r)
	}
	d.stop(t)
}

func checkNSCombination(t *testing.T, d *daemonProc, e *testEnv, handler, name, img string,
	nso *runtimeapi.NamespaceOption, host map[string]string) {
	pc := podConfig(name, e.logs)
	pc.Linux.SecurityContext.NamespaceOptions = nso
	if nso.Network == runtimeapi.NamespaceMode_NODE {
		pc.Hostname = "" // kubelet sends no hostname for host-network pods
	}
	r, err := d.rs.RunPodSandbox(bg, &runtimeapi.RunPodSandboxRequest{Config: pc, RuntimeHandler: handler})
	if err != nil {
		t.Fatalf("run pod: %v", err)
	}
	pod := r.PodSandboxId
	defer func() {
		if _, err := d.rs.RemovePodSandbox(bg, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Errorf("remove pod: %v", err)
		}
	}()
	if got := d.podStatus(t, pod).RuntimeHandler; got != handler {
		t.Errorf("pod runtime handler %q, want %q", got, handler)
	}
	// kubelet gives each container the pod's namespace options.
	start := func(cname string, ns *runtimeapi.NamespaceOption) int {
		cc := ctrConfig(cname, img, "sleep", "1000")
		cc.Linux = &runtimeapi.LinuxContainerConfig{
			Resources:       &runtimeapi.LinuxContainerResources{OomScoreAdj: -997, MemoryLimitInBytes: 64 << 20},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns},
		}
		id := d.create(t, pod, pc, cc)
		d.startCtr(t, id)
		d.waitState(t, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
		return d.initPid(t, id)
	}
	a, bpid := start("a", nso), start("b", nso)
	same := func(kind string, p, q int, want bool) {
		t.Helper()
		if got := nsLink(t, p, kind) == nsLink(t, q, kind); got != want {
			t.Errorf("%s namespace of %d and %d: same=%v, want %v", kind, p, q, got, want)
		}
	}
	hostNS := func(kind string, p int, want bool) {
		t.Helper()
		if got := nsLink(t, p, kind) == host[kind]; got != want {
			t.Errorf("%s namespace of %d is the host's: %v, want %v", kind, p, got, want)
		}
	}
	for _, p := range []int{a, bpid} {
		hostNS("net", p, nso.Network == runtimeapi.NamespaceMode_NODE)
		hostNS("uts", p, nso.Network == runtimeapi.NamespaceMode_NODE)
		hostNS("ipc", p, nso.Ipc == runtimeapi.NamespaceMode_NODE)
		hostNS("pid", p, nso.Pid == runtimeapi.NamespaceMode_NODE)
		hostNS("mnt", p, false)
	}
	same("net", a, bpid, true)
	same("uts", a, bpid, true)
	same("ipc", a, bpid, true)
	same("mnt", a, bpid, false)
	same("pid", a, bpid, nso.Pid != runtimeapi.NamespaceMode_CONTAINER)
	switch nso.Pid {
	case runtimeapi.NamespaceMode_POD:
		// The infra process is pid 1 of the shared namespace: the
		// containers are not.
		for _, p := range []int{a, bpid} {
			if ns := nsPids(t, p); len(ns) != 2 || ns[1] == "1" {
				t.Errorf("NSpid of %d in a shared pid namespace: %v", p, ns)
			}
		}
	case runtimeapi.NamespaceMode_CONTAINER:
		for _, p := range []int{a, bpid} {
			if ns := nsPids(t, p); len(ns) != 2 || ns[1] != "1" {
				t.Errorf("NSpid of %d in its own pid namespace: %v", p, ns)
			}
		}
		// An ephemeral container targets a's pid namespace.
		dbg := start("debug", &runtimeapi.NamespaceOption{Network: nso.Network, Ipc: nso.Ipc,
			Pid: runtimeapi.NamespaceMode_TARGET, TargetId: d.ctrID(t, pod, "a")})
		same("pid", dbg, a, true)
		same("pid", dbg, bpid, false)
	}
	if nso.Network == runtimeapi.NamespaceMode_POD {
		h, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/hostname", a))
		if strings.TrimSpace(string(h)) != name {
			t.Errorf("/etc/hostname %q, want %q", h, name)
		}
	}
}

// nsPids is the NSpid line of /proc/<pid>/status: the pid in each pid
// namespace from the host's down.
func nsPids(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return nil
}

// ctrID finds the id of the pod's container named name.
func (d *daemonProc) ctrID(t *testing.T, pod, name string) string {
	t.Helper()
	l, err := d.rs.ListContainers(bg, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: pod}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range l.Containers {
		if c.Metadata.Name == name {
			return c.Id
		}
	}
	t.Fatalf("no container %s in pod %s", name, pod)
	return ""
}
