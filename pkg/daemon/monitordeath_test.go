package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// monitorPid finds the monitor of the pod whose state dir is dir.
func monitorPid(t *testing.T, podDir string) int {
	t.Helper()
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmd), "monitor") && strings.Contains(string(cmd), podDir) {
			return pid
		}
	}
	t.Fatalf("no monitor for %s", podDir)
	return 0
}

// TestMonitorKilled: when a pod's monitor is killed (OOM, kill -9), its
// containers are killed and reported exited, and the pod can still be
// stopped and removed.
func TestMonitorKilled(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	pc := podConfig("md", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	c := d.create(t, pod, pc, ctrConfig("sleeper", img, "sleep", "1000"))
	d.startCtr(t, c)
	init := d.initPid(t, c)
	mon := monitorPid(t, filepath.Join(e.state, "pods", pod))
	if err := syscall.Kill(mon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 255 || st.Reason != "Unknown" {
		t.Errorf("after the monitor died: exit %d reason %q", st.ExitCode, st.Reason)
	}
	// The orphaned container process was killed.
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(init, 0) == nil {
		if b, _ := os.ReadFile(filepathJoinProc(init, "stat")); strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container init %d still alive after its monitor died", init)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := d.rs.StopPodSandbox(bg, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatalf("stop pod: %v", err)
	}
	if _, err := d.rs.RemovePodSandbox(bg, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatalf("remove pod: %v", err)
	}
	d.stop(t)
}

func filepathJoinProc(pid int, name string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), name)
}
