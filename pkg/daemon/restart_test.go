package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func countLines(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// TestRestartKeepsContainers kills the daemon with SIGKILL while pods have
// running, exited and created containers, and checks that after the
// restart everything is listed the same, that a container that exited
// meanwhile reports its exit code, and that containers kept running and
// logging throughout.
func TestRestartKeepsContainers(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimt1", "10.213.71.0/24"))
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)

	pa := podConfig("pod-a", e.logs)
	pb := podConfig("pod-b", e.logs)
	podA, podB := d.runPod(t, pa), d.runPod(t, pb)
	ipA := d.podStatus(t, podA).Network.Ip
	if ipA == "" {
		t.Fatal("pod A has no IP")
	}

	ticker := d.create(t, podA, pa, ctrConfig("ticker", img, "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done"))
	d.startCtr(t, ticker)
	done := d.create(t, podA, pa, ctrConfig("done", img, "sh", "-c", "echo bye; exit 3"))
	d.startCtr(t, done)
	created := d.create(t, podA, pa, ctrConfig("created", img, "sh", "-c", "echo started late; sleep 1000"))
	// Exits while the daemon is down.
	later := d.create(t, podB, pb, ctrConfig("later", img, "sh", "-c", "sleep 1.5; exit 7"))
	d.startCtr(t, later)
	d.waitState(t, done, runtimeapi.ContainerState_CONTAINER_EXITED)
	tickerPid := d.status(t, ticker) // for the log path
	tickerLog := tickerPid.LogPath

	before := countLines(t, tickerLog)
	d.kill9()
	// Down for a while: the ticker keeps logging, "later" exits.
	time.Sleep(2500 * time.Millisecond)
	during := countLines(t, tickerLog)
	if during <= before {
		t.Fatalf("the container stopped logging while the daemon was down: %d lines before, %d after", before, during)
	}

	d = e.start()
	if st := d.podStatus(t, podA); st.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Network.Ip != ipA {
		t.Errorf("pod A after restart: %v %s, want READY %s", st.State, st.Network.Ip, ipA)
	}
	if st := d.podStatus(t, podB); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod B after restart: %v", st.State)
	}
	if st := d.status(t, ticker); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("ticker after restart: %v", st.State)
	}
	if st := d.status(t, done); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("done after restart: %v code %d %s", st.State, st.ExitCode, st.Reason)
	}
	if st := d.status(t, created); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Errorf("created after restart: %v", st.State)
	}
	st := d.waitState(t, later, runtimeapi.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 7 || st.FinishedAt == 0 {
		t.Errorf("later: exit %d finished %d, want 7", st.ExitCode, st.FinishedAt)
	}
	// The restarted daemon drives what it did not create.
	r, err := d.rs.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: ticker, Cmd: []string{"sh", "-c", "echo ok"}, Timeout: 10})
	if err != nil || string(r.Stdout) != "ok\n" {
		t.Errorf("exec after restart: %q %v", r.GetStdout(), err)
	}
	d.startCtr(t, created)
	d.waitState(t, created, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if _, err := d.rs.StopContainer(bg, &runtimeapi.StopContainerRequest{ContainerId: ticker, Timeout: 2}); err != nil {
		t.Fatal(err)
	}
	if st := d.status(t, ticker); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("ticker after stop: %v", st.State)
	}
	if after := countLines(t, tickerLog); after <= during {
		t.Errorf("no log lines after the restart (%d, then %d)", during, after)
	}
	l, err := d.rs.ListContainers(bg, &runtimeapi.ListContainersRequest{})
	if err != nil || len(l.Containers) != 4 {
		t.Errorf("list after restart: %d containers, %v", len(l.GetContainers()), err)
	}
	d.removeAllPods(t)
	d.stop(t)
}

// TestRebootLeavesPodsNotReady simulates a reboot: every pod process dies,
// the state directory (a tmpfs) is gone with its mounts. The restarted
// daemon reports the pods NOTREADY and the containers EXITED, frees their
// addresses, and can remove them.
func TestRebootLeavesPodsNotReady(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimt2", "10.213.72.0/29"))
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	var pods, ctrs []string
	var pids []int
	for _, name := range []string{"r1", "r2"} {
		pc := podConfig(name, e.logs)
		pod := d.runPod(t, pc)
		c := d.create(t, pod, pc, ctrConfig("sleeper", img, "sleep", "1000"))
		d.startCtr(t, c)
		pods, ctrs, pids = append(pods, pod), append(ctrs, c), append(pids, d.initPid(t, c))
	}
	d.kill9()
	simulateReboot(t, e, pids)

	d = e.start()
	for _, p := range pods {
		if st := d.podStatus(t, p); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY || st.Network.Ip != "" {
			t.Errorf("pod %s after reboot: %v ip %q", p, st.State, st.Network.Ip)
		}
	}
	for _, c := range ctrs {
		if st := d.status(t, c); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Errorf("container %s after reboot: %v", c, st.State)
		}
	}
	// The /29 has 5 pod addresses: the two old pods' addresses were
	// freed, so five new pods fit.
	for i := 0; i < 5; i++ {
		d.runPod(t, podConfig("after-"+string(rune('a'+i)), e.logs))
	}
	d.removeAllPods(t)
	if l, _ := d.rs.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{}); len(l.Items) != 0 {
		t.Errorf("%d pods left", len(l.Items))
	}
	d.stop(t)
}

// simulateReboot kills the pods' monitors and containers (given by their
// init pids), removes the containers' cgroups, unmounts everything under
// the state dir and removes it, as a reboot would.
func simulateReboot(t *testing.T, e *testEnv, initPids []int) {
	t.Helper()
	var cgroups []string
	for _, pid := range initPids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			t.Fatalf("container init %d: %v", pid, err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.SplitN(l, ":", 3)
			if len(parts) != 3 || parts[2] == "/" {
				continue
			}
			ctrl := strings.Split(parts[1], ",")[0]
			switch {
			case parts[1] == "":
				cgroups = append(cgroups, filepath.Join("/sys/fs/cgroup/unified", parts[2]))
			case strings.HasPrefix(ctrl, "name="):
				cgroups = append(cgroups, filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(ctrl, "name="), parts[2]))
			default:
				cgroups = append(cgroups, filepath.Join("/sys/fs/cgroup", ctrl, parts[2]))
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if pid, perr := strconv.Atoi(p.Name()); perr == nil && err == nil && strings.Contains(string(cmd), e.state) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, cg := range cgroups {
		b, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	for _, cg := range cgroups {
		for i := 0; i < 50 && os.Remove(cg) != nil && !os.IsNotExist(os.Remove(cg)); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], e.state) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
	if err := os.RemoveAll(e.state); err != nil {
		t.Fatal(err)
	}
}

// initPid reads a container's init pid from its verbose status.
func (d *daemonProc) initPid(t *testing.T, id string) int {
	t.Helper()
	r, err := d.rs.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(r.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("no pid in verbose status %q: %v", r.Info["info"], err)
	}
	return info.Pid
}
