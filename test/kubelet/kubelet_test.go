package kubelet

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	busybox  = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	nginx    = "registry.k8s.io/e2e-test-images/nginx:1.14-2"
	hostPort = 31987
)

// Static pods. kubelet names them <name>-<node name>.
var manifests = map[string]string{
	// Several containers, an init container, exec and HTTP probes, a host
	// port, CPU and memory limits, a shared PID namespace (the infra
	// process).
	"web": fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 2
  shareProcessNamespace: true
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: init
    image: %[1]s
    command: ["sh", "-c", "echo initialised by $(hostname) > /work/init; echo init done"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: nginx
    image: %[2]s
    ports: [{containerPort: 80, hostPort: %[3]d}]
    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 2}
    livenessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 5}
  - name: app
    image: %[1]s
    command: ["sh", "-c", "cat /work/init; touch /tmp/ready; exec sleep 100000"]
    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 2}
    livenessProbe: {exec: {command: ["true"]}, periodSeconds: 5}
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 200m, memory: 64Mi}
    volumeMounts: [{name: work, mountPath: /work}]
`, busybox, nginx, hostPort),
	// Host network, Guaranteed (oom_score_adj -997).
	"hostnet": fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: hostnet
  namespace: kube-system
spec:
  terminationGracePeriodSeconds: 2
  hostNetwork: true
  containers:
  - name: sleeper
    image: %s
    command: ["sleep", "100000"]
    readinessProbe: {exec: {command: [grep, -q, nameserver, /etc/resolv.conf]}, periodSeconds: 2}
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 100m, memory: 32Mi}
`, busybox),
	// A container that keeps exiting: restartPolicy Always restarts it.
	"crasher": fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: crasher
  namespace: default
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 2
  containers:
  - name: crash
    image: %s
    command: ["sh", "-c", "echo crashing; exit 3"]
`, busybox),
	// Attach targets: a container echoing its stdin, and a shell on a
	// terminal (kubectl run -it).
	"talker": fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: talker
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: echo
    image: %[1]s
    command: ["sh", "-c", "while read l; do echo got:$l; done"]
    stdin: true
  - name: shell
    image: %[1]s
    command: ["sh"]
    stdin: true
    tty: true
`, busybox),
	// Removed from the manifest directory while the others run.
	"doomed": fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: doomed
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: sleeper
    image: %s
    command: ["sleep", "100000"]
`, busybox),
}

func podName(name string) string { return name + "-" + nodeName }

// TestKubelet runs the static pods above on a standalone kubelet and checks
// them through kubelet and through shim. The subtests run in order on one
// node; a check that needs what shim does not serve yet says so.
//
// kubelet's streaming endpoints (/exec, /attach, /portForward) and
// /metrics/resource are driven with client-go's clients
// (streaming_test.go).
func TestKubelet(t *testing.T) {
	n := startNode(t)
	t0 := time.Now()
	for name, m := range manifests {
		n.writeManifest(t, name, m)
	}

	if !t.Run("static pods start", func(t *testing.T) {
		waitFor(t, "the pods to be ready", 5*time.Minute, func() (bool, string) {
			ps, err := n.pods()
			if err != nil {
				return false, err.Error()
			}
			var waiting []string
			for _, name := range []string{"web", "hostnet", "doomed"} {
				if p, ok := ps[podName(name)]; !ok || !p.ready() {
					waiting = append(waiting, podName(name))
				}
			}
			if p, ok := ps[podName("crasher")]; !ok || p.container("crash") == nil || p.container("crash").ContainerID == "" {
				waiting = append(waiting, podName("crasher"))
			}
			return len(waiting) == 0, fmt.Sprintf("not ready: %v", waiting)
		})
		t.Logf("pods ready %s after the manifests were written", time.Since(t0).Round(time.Second))
		for _, name := range []string{"web", "hostnet", "doomed", "crasher"} {
			p := n.pod(t, podName(name))
			if got := n.sandboxes(t, p.Metadata.UID); len(got) != 1 || got[0].State.String() != "SANDBOX_READY" {
				t.Errorf("shim's sandboxes of %s: %v", name, got)
			}
		}
	}) {
		return
	}

	web := n.pod(t, podName("web"))
	webUID := web.Metadata.UID

	t.Run("init container ran first", func(t *testing.T) {
		init := web.container("init")
		if init == nil || init.State.Terminated == nil || init.State.Terminated.ExitCode != 0 || init.State.Terminated.Reason != "Completed" {
			t.Fatalf("init container status: %+v", init)
		}
		// Through kubelet's log reader (the CRI log format shim writes).
		for c, want := range map[string]string{"init": "init done\n", "app": "initialised by " + podName("web") + "\n"} {
			b, err := n.get("/containerLogs/default/" + podName("web") + "/" + c)
			if err != nil || string(b) != want {
				t.Errorf("log of %s: %q %v, want %q", c, b, err, want)
			}
		}
	})

	t.Run("exec and HTTP probes", func(t *testing.T) {
		// Ready needs the readiness probes (exec for app, HTTP for nginx) to
		// have passed; no restart means the liveness probes pass.
		p := n.pod(t, podName("web"))
		for _, c := range []string{"nginx", "app"} {
			s := p.container(c)
			if s == nil || !s.Ready || s.RestartCount != 0 || s.State.Running == nil {
				t.Errorf("container %s: %+v", c, s)
			}
		}
	})

	t.Run("host port", func(t *testing.T) {
		waitFor(t, "the host port to answer", time.Minute, func() (bool, string) {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", hostPort))
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			return resp.StatusCode == http.StatusOK && strings.Contains(string(b), "Welcome to nginx!"), resp.Status + " " + string(b)
		})
	})

	t.Run("memory and CPU limits", func(t *testing.T) {
		pid := n.hostPid(t, n.runningContainer(t, webUID, "app").Id)
		// 64Mi and 200m (20000 of a 100000 period), under the pod cgroup
		// kubelet made: cgroup v1 files, or v2's on a unified host.
		files := map[string]string{"memory.limit_in_bytes": strconv.Itoa(64 << 20), "cpu.cfs_quota_us": "20000"}
		if unified() {
			files = map[string]string{"memory.max": strconv.Itoa(64 << 20), "cpu.max": "20000 100000"}
		}
		for file, want := range files {
			ctl, _, _ := strings.Cut(file, ".")
			dir := containerCgroup(t, pid, ctl)
			if !strings.Contains(dir, "/"+cgroupRoot+"/kubepods/burstable/pod"+webUID+"/") {
				t.Errorf("%s cgroup %s is not under kubelet's pod cgroup", ctl, dir)
			}
			v, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil || strings.TrimSpace(string(v)) != want {
				t.Errorf("%s: %q %v, want %s", file, v, err, want)
			}
		}
	})

	t.Run("shared PID namespace", func(t *testing.T) {
		comms := n.exec(t, n.runningContainer(t, webUID, "app").Id, "sh", "-c", "cat /proc/[0-9]*/comm")
		for _, want := range []string{"pause", "nginx", "sleep"} {
			if !strings.Contains(comms, want+"\n") {
				t.Errorf("no %s process seen from app: %q", want, comms)
			}
		}
	})

	t.Run("DNS and pod files", func(t *testing.T) {
		// resolvConf "" and no cluster DNS: kubelet asks for the node's
		// loopback and the search domain ".".
		const resolv = "search .\nnameserver 127.0.0.1\n"
		app := n.runningContainer(t, webUID, "app").Id
		if got := n.exec(t, app, "cat", "/etc/resolv.conf"); got != resolv {
			t.Errorf("web resolv.conf %q, want %q", got, resolv)
		}
		if got := n.exec(t, app, "cat", "/etc/hostname"); got != podName("web")+"\n" {
			t.Errorf("web hostname %q", got)
		}
		if got := n.exec(t, app, "cat", "/etc/hosts"); !strings.Contains(got, web.Status.PodIP+"\t"+podName("web")) {
			t.Errorf("kubelet's /etc/hosts (pod IP %s) not mounted: %q", web.Status.PodIP, got)
		}
		host := n.pod(t, podName("hostnet"))
		sleeper := n.runningContainer(t, host.Metadata.UID, "sleeper").Id
		if got := n.exec(t, sleeper, "cat", "/etc/resolv.conf"); got != resolv {
			t.Errorf("hostnet resolv.conf %q, want %q", got, resolv)
		}
		hn, _ := os.Hostname()
		if got := n.exec(t, sleeper, "hostname"); got != hn+"\n" {
			t.Errorf("hostnet hostname %q, want the node's %q", got, hn)
		}
	})

	t.Run("restart count grows", func(t *testing.T) {
		uid := n.pod(t, podName("crasher")).Metadata.UID
		waitFor(t, "two restarts", 4*time.Minute, func() (bool, string) {
			p := n.pod(t, podName("crasher"))
			c := p.container("crash")
			return c != nil && c.RestartCount >= 2, fmt.Sprintf("%+v", c)
		})
		c := n.pod(t, podName("crasher")).container("crash")
		if c.LastState.Terminated == nil || c.LastState.Terminated.ExitCode != 3 {
			t.Errorf("last state %+v, want exit code 3", c.LastState)
		}
		// shim has the attempts kubelet counted (kubelet's GC keeps the
		// last dead one).
		maxAttempt := uint32(0)
		for _, ct := range n.containers(t, uid) {
			maxAttempt = max(maxAttempt, ct.Metadata.Attempt)
		}
		if maxAttempt < 2 {
			t.Errorf("shim's containers of crasher: highest attempt %d, want at least 2", maxAttempt)
		}
	})

	// kubectl exec, attach and port-forward, through kubelet.
	t.Run("exec through kubelet", func(t *testing.T) { testKubeletExec(t, n) })
	t.Run("attach through kubelet", func(t *testing.T) { testKubeletAttach(t, n) })
	t.Run("port-forward through kubelet", func(t *testing.T) { testKubeletPortForward(t, n) })
	t.Run("resource metrics", func(t *testing.T) { testKubeletResourceMetrics(t, n) })

	t.Run("removed pod is gone from shim", func(t *testing.T) {
		uid := n.pod(t, podName("doomed")).Metadata.UID
		n.removeManifest(t, "doomed")
		// kubelet stops the pod, then its garbage collection (every
		// minute) removes the sandbox and containers.
		waitFor(t, "shim to have nothing of the removed pod", 4*time.Minute, func() (bool, string) {
			sbs, ctrs := n.sandboxes(t, uid), n.containers(t, uid)
			return len(sbs) == 0 && len(ctrs) == 0, fmt.Sprintf("%d sandboxes, %d containers", len(sbs), len(ctrs))
		})
		if ps, err := n.pods(); err != nil || ps[podName("doomed")] != nil {
			t.Errorf("kubelet still has the pod: %v", err)
		}
		if !n.pod(t, podName("web")).ready() {
			t.Error("web is not ready any more")
		}
	})

	t.Run("every pod removed", func(t *testing.T) {
		for name := range manifests {
			if name != "doomed" {
				n.removeManifest(t, name)
			}
		}
		waitFor(t, "shim to have no pod", 4*time.Minute, func() (bool, string) {
			sbs, ctrs := n.sandboxes(t, ""), n.containers(t, "")
			return len(sbs) == 0 && len(ctrs) == 0, fmt.Sprintf("%d sandboxes, %d containers", len(sbs), len(ctrs))
		})
	})
	t.Logf("kubelet run: %s", time.Since(t0).Round(time.Second))
}
