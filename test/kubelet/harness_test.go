// Package kubelet runs a real kubelet (standalone: static pods, no API
// server) on shim, the way a node does, and checks what it does through
// kubelet's own HTTPS server and through shim's CRI socket.
//
// Run by hack/kubelet-e2e.sh (and so by `make test`), which builds kubelet
// v1.37.2 and bin/shim, serves the test images on 127.0.0.1:5000 and sets
// SHIM_KUBELET_E2E=1 (SHIM_KUBELET_E2E_KEEP=1 keeps the logs, as a failure
// does). Everything it creates is its own: a temporary directory (kubelet
// root, pod logs, manifests, shim root and state), the kubelet ports 11250
// and 11248 (not the defaults, which another kubelet on this machine may
// use), the cgroup root /shimkl, the bridge shimkl0 with 10.66.0.0/16 and
// the nftables table shimkl. Kernel settings kubelet changes at start
// (vm.overcommit_memory, kernel.panic, ...) are put back.
package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// What this test owns on the host.
const (
	kubeletPort = 11250
	healthzPort = 11248
	nodeName    = "shimkl-node"
	cgroupRoot  = "shimkl"
	bridgeName  = "shimkl0"
	podCIDR     = "10.66.0.0/16"
	nftTable    = "shimkl"
	vethPrefix  = "kl"
	registry    = "127.0.0.1:5000"
)

// Kernel settings kubelet sets at start (setupKernelTunables): restored at
// the end.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

var bg = context.Background()

// node is a running shim and kubelet.
type node struct {
	t         *testing.T
	dir       string // everything of this run
	repo      string
	manifests string
	shim      *proc
	kubelet   *proc
	conn      *grpc.ClientConn
	cri       runtimeapi.RuntimeServiceClient
	https     *http.Client // to kubelet's server (its own certificate)
}

// proc is a process this test started, with its log.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, name, logPath string, args ...string) *proc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and, after grace, SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if p == nil || !p.running() {
		return
	}
	p.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail is the end of the process's log.
func (p *proc) tail(lines int) string {
	b, _ := os.ReadFile(p.log)
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// startNode starts shim and kubelet; t.Cleanup stops them and removes what
// they left.
func startNode(t *testing.T) *node {
	t.Helper()
	if os.Getenv("SHIM_KUBELET_E2E") == "" {
		t.Skip("run by hack/kubelet-e2e.sh (SHIM_KUBELET_E2E is not set): it needs kubelet, bin/shim and the test registry")
	}
	if os.Getuid() != 0 {
		t.Fatal("SHIM_KUBELET_E2E is set but the test does not run as root")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	kubeletBin := envOr("KUBELET_BIN", filepath.Join(repo, "_output/bin/kubelet"))
	shimBin := envOr("SHIM_BIN", filepath.Join(repo, "bin/shim"))
	for _, b := range []string{kubeletBin, shimBin} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%v (hack/kubelet-e2e.sh builds it)", err)
		}
	}
	if resp, err := http.Get("http://" + registry + "/v2/"); err != nil {
		t.Fatalf("the test registry does not answer (hack/registry.sh start): %v", err)
	} else {
		resp.Body.Close()
	}
	for _, port := range []int{kubeletPort, healthzPort} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			t.Fatalf("port %d is in use: is another kubelet e2e running?", port)
		}
	}
	dir, err := os.MkdirTemp("", "shim-kubelet-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, dir: dir, repo: repo, manifests: filepath.Join(dir, "manifests")}
	t.Cleanup(n.teardown)
	for _, d := range []string{n.manifests, filepath.Join(dir, "logs"), filepath.Join(dir, "kubelet")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.saveSysctls()
	n.makeCgroupRoot()
	n.startShim(shimBin)
	n.startKubelet(kubeletBin)
	return n
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (n *node) sock() string { return filepath.Join(n.dir, "shim.sock") }

func (n *node) startShim(bin string) {
	t := n.t
	cfg := fmt.Sprintf(`root = %q
state = %q
listen = "unix://%s"
log_level = "debug"
[image]
registry_config = %q
[network]
driver = "bridge"
bridge = %q
pod_cidr = %q
nft_table = %q
veth_prefix = %q
`, filepath.Join(n.dir, "shim-root"), filepath.Join(n.dir, "shim-state"), n.sock(), filepath.Join(n.repo, "hack/certs.d"),
		bridgeName, podCIDR, nftTable, vethPrefix)
	path := filepath.Join(n.dir, "shim.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n.shim = start(t, "shim", filepath.Join(n.dir, "shim.log"), bin, "serve", "--config", path)
	waitFor(t, "shim's socket", time.Minute, func() (bool, string) {
		if !n.shim.running() {
			t.Fatalf("shim exited:\n%s", n.shim.tail(40))
		}
		c, err := net.Dial("unix", n.sock())
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	conn, err := grpc.NewClient("unix://"+n.sock(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	n.conn, n.cri = conn, runtimeapi.NewRuntimeServiceClient(conn)
}

func (n *node) startKubelet(bin string) {
	t := n.t
	root := filepath.Join(n.dir, "kubelet")
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
staticPodPath: %s
fileCheckFrequency: 5s
syncFrequency: 10s
podLogsDir: %s
volumePluginDir: %s
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: /%s
failSwapOn: false
failCgroupV1: false
resolvConf: ""
makeIPTablesUtilChains: false
oomScoreAdj: 0
registerNode: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
`, kubeletPort, healthzPort, n.manifests, filepath.Join(n.dir, "logs"), filepath.Join(n.dir, "volume-plugins"),
		n.sock(), n.sock(), cgroupRoot)
	path := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n.kubelet = start(t, "kubelet", filepath.Join(n.dir, "kubelet.log"), bin, "--config", path, "--root-dir", root,
		"--cert-dir", filepath.Join(n.dir, "pki"), "--hostname-override", nodeName, "--v", "2")
	waitFor(t, "kubelet's healthz", 2*time.Minute, func() (bool, string) {
		if !n.kubelet.running() {
			t.Fatalf("kubelet exited:\n%s", n.kubelet.tail(60))
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthzPort))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	// kubelet serves HTTPS with a certificate it made for the node name
	// (a serving certificate and its CA, in cert-dir).
	pem, err := os.ReadFile(filepath.Join(n.dir, "pki", "kubelet.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in kubelet.crt")
	}
	n.https = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: nodeName},
	}}
}

// KubeletURL is the URL of path on kubelet's HTTPS server (/pods,
// /containerLogs/..., /exec/..., /metrics/resource, ...). Use n.https (or
// n.TLSConfig for other clients) to reach it.
func (n *node) KubeletURL(path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", kubeletPort, path)
}

// TLSConfig is what a client of kubelet's server needs (client-go's
// remotecommand and portforward take it through rest.Config.TLSClientConfig
// or a transport).
func (n *node) TLSConfig() *tls.Config {
	return n.https.Transport.(*http.Transport).TLSClientConfig.Clone()
}

// get fetches path from kubelet's server.
func (n *node) get(path string) ([]byte, error) {
	resp, err := n.https.Get(n.KubeletURL(path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b, nil
}

// waitFor polls cond until it holds; on timeout the test fails with cond's
// last message. Only a bound on waiting: nothing asserts a duration.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	msg := ""
	for {
		ok, m := cond()
		if ok {
			return
		}
		msg = m
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s", what, msg)
		}
		time.Sleep(time.Second)
	}
}

func (n *node) saveSysctls() {
	saved := map[string][]byte{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			saved[k] = b
		}
	}
	n.t.Cleanup(func() {
		for k, v := range saved {
			if err := os.WriteFile("/proc/sys/"+k, v, 0); err != nil {
				n.t.Errorf("restoring %s: %v", k, err)
			}
		}
	})
}

// unified reports a cgroup v2 only host.
func unified() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers,
// named ones, the v2 mount of a hybrid host).
func cgroupHierarchies(t *testing.T) []string {
	if unified() {
		return []string{"/sys/fs/cgroup"}
	}
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		var st unix.Statfs_t
		if e.IsDir() && unix.Statfs(p, &st) == nil && (st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC) {
			out = append(out, p)
		}
	}
	return out
}

// makeCgroupRoot makes kubelet's cgroup root in every hierarchy (kubelet
// wants it to exist), cpuset initialised from its parent.
func (n *node) makeCgroupRoot() {
	t := n.t
	removeCgroupRoot(t) // a run that was killed; teardown removes it again
	for _, h := range cgroupHierarchies(t) {
		p := filepath.Join(h, cgroupRoot)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(p, f), b, 0); err != nil {
					t.Fatalf("%s/%s: %v", p, f, err)
				}
			}
		}
	}
}

// removeCgroupRoot removes the cgroup root's tree, children first. A
// cgroup that still has processes cannot be removed: that is an error.
func removeCgroupRoot(t *testing.T) {
	for _, h := range cgroupHierarchies(t) {
		root := filepath.Join(h, cgroupRoot)
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			for i := 0; i < 50; i++ {
				if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				t.Errorf("removing cgroup %s: %v", d, err)
			}
		}
	}
}

// teardown stops kubelet, removes every pod shim still has, stops shim and
// removes what they left on the host.
func (n *node) teardown() {
	t := n.t
	if t.Failed() {
		for _, p := range []*proc{n.kubelet, n.shim} {
			if p != nil {
				t.Logf("last lines of the %s log (%s):\n%s", p.name, p.log, p.tail(60))
			}
		}
	}
	n.kubelet.stop(30 * time.Second)
	if n.cri != nil && n.shim != nil && n.shim.running() {
		ctx, cancel := context.WithTimeout(bg, 2*time.Minute)
		if l, err := n.cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range l.Items {
				if _, err := n.cri.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
					t.Errorf("removing pod %s: %v", p.Metadata.GetName(), err)
				}
			}
		}
		cancel()
	}
	if n.conn != nil {
		n.conn.Close()
	}
	n.shim.stop(time.Minute)
	// After kubelet and shim: a pod left running (a test that stopped
	// early) would keep its cgroups busy.
	removeCgroupRoot(t)
	unmountUnder(t, n.dir)
	for _, c := range [][]string{{"ip", "link", "del", bridgeName}, {"nft", "delete", "table", "ip", nftTable}} {
		exec.Command(c[0], c[1:]...).Run() // absent when nothing was set up
	}
	if t.Failed() || os.Getenv("SHIM_KUBELET_E2E_KEEP") != "" {
		t.Logf("logs and state kept in %s", n.dir)
		return
	}
	if err := os.RemoveAll(n.dir); err != nil {
		t.Errorf("removing %s: %v", n.dir, err)
	}
}

// unmountUnder detaches every mount under dir (kubelet makes its root
// directory a shared mount, and mounts volumes under it), deepest first.
func unmountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mps = append(mps, f[4])
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, m := range slices.Compact(mps) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

// Kubelet's view of pods (/pods): the fields this test reads.
type kPod struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Phase      string `json:"phase"`
		PodIP      string `json:"podIP"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		InitContainerStatuses []kContainer `json:"initContainerStatuses"`
		ContainerStatuses     []kContainer `json:"containerStatuses"`
	} `json:"status"`
}

type kState struct {
	Running *struct {
		StartedAt string `json:"startedAt"`
	} `json:"running"`
	Waiting *struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"waiting"`
	Terminated *struct {
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
	} `json:"terminated"`
}

type kContainer struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	ContainerID  string `json:"containerID"`
	State        kState `json:"state"`
	LastState    kState `json:"lastState"`
}

func (p *kPod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (p *kPod) container(name string) *kContainer {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == name {
			return &p.Status.InitContainerStatuses[i]
		}
	}
	return nil
}

// pods is kubelet's /pods, by name.
func (n *node) pods() (map[string]*kPod, error) {
	b, err := n.get("/pods")
	if err != nil {
		return nil, err
	}
	var l struct {
		Items []*kPod `json:"items"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, err
	}
	out := map[string]*kPod{}
	for _, p := range l.Items {
		out[p.Metadata.Name] = p
	}
	return out, nil
}

// pod is kubelet's view of one pod; the test fails if kubelet has none.
func (n *node) pod(t *testing.T, name string) *kPod {
	t.Helper()
	ps, err := n.pods()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := ps[name]
	if !ok {
		t.Fatalf("kubelet has no pod %s", name)
	}
	return p
}

// uidSelector selects the pod with this uid; "" selects every pod.
func uidSelector(uid string) map[string]string {
	if uid == "" {
		return nil
	}
	return map[string]string{"io.kubernetes.pod.uid": uid}
}

// sandboxes are shim's pod sandboxes of the pod with this uid ("": all).
func (n *node) sandboxes(t *testing.T, uid string) []*runtimeapi.PodSandbox {
	t.Helper()
	l, err := n.cri.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: uidSelector(uid)}})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// containers are shim's containers of the pod with this uid ("": all).
func (n *node) containers(t *testing.T, uid string) []*runtimeapi.Container {
	t.Helper()
	l, err := n.cri.ListContainers(bg, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: uidSelector(uid)}})
	if err != nil {
		t.Fatal(err)
	}
	return l.Containers
}

// runningContainer is shim's running container name of the pod uid.
func (n *node) runningContainer(t *testing.T, uid, name string) *runtimeapi.Container {
	t.Helper()
	for _, c := range n.containers(t, uid) {
		if c.Metadata.Name == name && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			return c
		}
	}
	t.Fatalf("shim has no running container %s in pod %s", name, uid)
	return nil
}

// exec runs cmd in a container through CRI ExecSync.
func (n *node) exec(t *testing.T, id string, cmd ...string) string {
	t.Helper()
	r, err := n.cri.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 30})
	if err != nil {
		t.Fatalf("exec %v: %v", cmd, err)
	}
	if r.ExitCode != 0 {
		t.Fatalf("exec %v: exit %d: %s%s", cmd, r.ExitCode, r.Stdout, r.Stderr)
	}
	return string(r.Stdout)
}

// hostPid is the host pid of a container's init (shim's verbose status).
func (n *node) hostPid(t *testing.T, id string) int {
	t.Helper()
	r, err := n.cri.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(r.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("no pid in the verbose status of %s: %q", id, r.Info["info"])
	}
	return info.Pid
}

// writeManifest puts a static pod in kubelet's manifest directory.
func (n *node) writeManifest(t *testing.T, name, yaml string) {
	t.Helper()
	tmp := filepath.Join(n.dir, name+".yaml.tmp")
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(n.manifests, name+".yaml")); err != nil {
		t.Fatal(err)
	}
}

func (n *node) removeManifest(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(n.manifests, name+".yaml")); err != nil {
		t.Fatal(err)
	}
}

// containerCgroup is the directory of process pid's cgroup for controller
// ctl (v1), or of its only cgroup (v2).
func containerCgroup(t *testing.T, pid int, ctl string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" && unified() {
			return filepath.Join("/sys/fs/cgroup", f[2])
		}
		if slices.Contains(strings.Split(f[1], ","), ctl) {
			return filepath.Join("/sys/fs/cgroup", ctl, f[2])
		}
	}
	t.Fatalf("no %s cgroup in /proc/%d/cgroup:\n%s", ctl, pid, b)
	return ""
}
