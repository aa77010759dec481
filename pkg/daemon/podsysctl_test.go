package daemon

import (
	"os"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodSysctlsAndShm: a pod's IPC sysctls are written in its IPC
// namespace (the host keeps its value) and its /dev/shm is the pod's own
// 64 MiB tmpfs (nosuid, nodev, noexec), gone when the pod is removed.
func TestPodSysctlsAndShm(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	before := residue(t, e, d)
	const sysctl = "/proc/sys/kernel/shm_rmid_forced"
	host, err := os.ReadFile(sysctl)
	if err != nil {
		t.Fatal(err)
	}
	want := "1"
	if strings.TrimSpace(string(host)) == "1" {
		want = "0"
	}
	pc := podConfig("sysctls", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pc.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": want, "kernel/msgmax": "12345"}
	pod := d.runPod(t, pc)
	c := d.create(t, pod, pc, ctrConfig("reader", img, "sleep", "1000"))
	d.startCtr(t, c)
	r, err := d.rs.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: c, Timeout: 60, Cmd: []string{"sh", "-c",
		"echo rmid=$(cat " + sysctl + ") msgmax=$(cat /proc/sys/kernel/msgmax); grep ' /dev/shm ' /proc/mounts; echo shm-mode=$(stat -c %a /dev/shm)"}})
	if err != nil {
		t.Fatal(err)
	}
	out := string(r.Stdout) + string(r.Stderr)
	for _, w := range []string{"rmid=" + want + " ", "msgmax=12345\n", "shm /dev/shm tmpfs ", "nosuid", "nodev", "noexec", "size=65536k", "shm-mode=1777\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("want %q in the container's view:\n%s", w, out)
		}
	}
	if after, _ := os.ReadFile(sysctl); string(after) != string(host) {
		t.Errorf("the host's %s changed from %q to %q", sysctl, host, after)
	}
	d.removeAllPods(t)
	if r := residue(t, e, d); r != before {
		t.Errorf("left behind:\n%s", r)
	}
	d.stop(t)
}
