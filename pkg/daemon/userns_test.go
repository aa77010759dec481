package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// usernsMapping is the pod's mapping in these tests (kubelet gives each
// pod 65536 ids from 65536 up).
var usernsMapping = []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 300000, Length: 65536}}

func usernsPodConfig(name, logs string) *runtimeapi.PodSandboxConfig {
	pc := podConfig(name, logs)
	pc.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
		Mode: runtimeapi.NamespaceMode_POD, Uids: usernsMapping, Gids: usernsMapping}
	return pc
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// nsOwner is the inode of the user namespace owning the namespace file.
func nsOwner(t *testing.T, path string) uint64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	u, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(u)
	var st unix.Stat_t
	unix.Fstat(u, &st)
	return st.Ino
}

func hostOwner(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// TestUserNamespacePod runs a pod with its own user namespace (kubelet's
// hostUsers: false) and a shared pid namespace: the pod's namespaces are
// owned by its pinned user namespace, the container's root is the mapped
// host id, the image and the runtime's files are the container's own
// (idmapped), a volume with kubelet's mappings stores the container's
// ids on the host, a volume without stores the mapped host ids, exec
// joins the user namespace, and nothing is left once the pod is removed.
func TestUserNamespacePod(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimt7", "10.213.77.0/24")+"[image]\nsandbox_image = \"PAUSE\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:userns", busyboxImage(t, nil, []string{"sh"}))
	pause := reg.push(t, "test/pause:userns", busyboxImage(t, []string{"sleep", "1000000"}, nil))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "PAUSE", pause, 1)), 0o600)
	d := e.start()
	d.pull(t, img)
	before := residue(t, e, d)

	idmapped := t.TempDir() // root's, 0700: only an idmapped mount makes it the container's
	os.WriteFile(filepath.Join(idmapped, "from-host"), []byte("host file\n"), 0o600)
	plain := t.TempDir()
	os.Chmod(plain, 0o777)

	pc := usernsPodConfig("userns", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	pod := d.runPod(t, pc)
	user := filepath.Join(e.state, "ns", pod+"-user")
	for _, kind := range []string{"net", "ipc", "uts"} {
		if o := nsOwner(t, filepath.Join(e.state, "ns", pod+"-"+kind)); o != nsInode(t, user) {
			t.Errorf("the pod's %s namespace is owned by user namespace %d, want the pod's %d", kind, o, nsInode(t, user))
		}
	}
	cc := ctrConfig("c", img, "sh", "-c", `cat /proc/self/uid_map; echo id=$(id -u):$(id -g)
stat -c 'passwd=%u:%g' /etc/passwd; stat -c 'hostname=%u' /etc/hostname; stat -c 'shm=%u' /dev/shm
echo rootfs > /written && echo rootfs-writable
cat /vol/from-host; echo new > /vol/new; echo plain > /plain/new; ls /sys/class/net | grep -c lo
hostname; sleep 1000`)
	cc.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/vol", HostPath: idmapped, UidMappings: usernsMapping, GidMappings: usernsMapping},
		{ContainerPath: "/plain", HostPath: plain},
	}
	c := d.create(t, pod, pc, cc)
	d.startCtr(t, c)
	d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_RUNNING)
	st := d.status(t, c)
	log := waitLog(t, st.LogPath, "userns\n")
	if !uidMapRe.MatchString(log) {
		t.Errorf("want the pod's uid_map in the log:\n%s", log)
	}
	for _, want := range []string{"id=0:0", "passwd=0:0", "hostname=0", "shm=0", "rootfs-writable",
		"host file", "F 1\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("want %q in the log:\n%s", want, log)
		}
	}
	if o := hostOwner(t, filepath.Join(idmapped, "new")); o != "0:0" {
		t.Errorf("a file the container's root wrote on the idmapped volume is %s on the host, want 0:0", o)
	}
	if o := hostOwner(t, filepath.Join(plain, "new")); o != "300000:300000" {
		t.Errorf("a file the container's root wrote on the plain volume is %s on the host, want 300000:300000", o)
	}
	if u := st.GetUser().GetLinux(); u.GetUid() != 0 || u.GetGid() != 0 {
		t.Errorf("status user %+v, want the container's uid 0", u)
	}
	vr, err := d.rs.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{ContainerId: c, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Pid int }
	json.Unmarshal([]byte(vr.Info["info"]), &info)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.Pid))
	if uid := statusField(string(b), "Uid"); !strings.HasPrefix(uid, "300000\t") {
		t.Errorf("the container's process runs as host uid %q, want 300000", uid)
	}
	if nsInode(t, fmt.Sprintf("/proc/%d/ns/user", info.Pid)) != nsInode(t, user) {
		t.Error("the container is not in the pod's user namespace")
	}
	r, err := d.rs.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: c, Cmd: []string{"sh", "-c", "cat /proc/self/uid_map; id -u; touch /vol/by-exec"}, Timeout: 10})
	if err != nil || r.ExitCode != 0 || !strings.Contains(string(r.Stdout), "300000") || !strings.HasSuffix(string(r.Stdout), "\n0\n") {
		t.Errorf("exec: %v %d %q %q", err, r.GetExitCode(), r.GetStdout(), r.GetStderr())
	}
	d.removeAllPods(t)
	if after := residue(t, e, d); after != before {
		t.Errorf("left behind:\n%s\nbefore:\n%s", after, before)
	}
	d.stop(t)
}

// uidMapRe matches the pod's mapping as /proc/self/uid_map prints it.
var uidMapRe = regexp.MustCompile(`F\s+0\s+300000\s+65536\n`)

func statusField(s, key string) string {
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// waitLog waits until the CRI log at path contains want.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	var b []byte
	for i := 0; i < 500; i++ {
		b, _ = os.ReadFile(path)
		if strings.Contains(string(b), want) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return string(b)
}

// TestUserNamespaceHostNetwork: a pod with a user namespace and the host's
// network (user_namespaces_host_network): only its ipc namespace is pinned
// with the user namespace, and the container sees the host's interfaces
// through a read-only /sys.
func TestUserNamespaceHostNetwork(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:usernshost", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	before := residue(t, e, d)
	pc := usernsPodConfig("usernshost", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	pins, _ := os.ReadDir(filepath.Join(e.state, "ns"))
	var names []string
	for _, p := range pins {
		names = append(names, strings.TrimPrefix(p.Name(), pod+"-"))
	}
	if strings.Join(names, ",") != "ipc,user" {
		t.Errorf("pins %v, want ipc and user", names)
	}
	c := d.create(t, pod, pc, ctrConfig("c", img, "sh", "-c",
		"cat /proc/self/uid_map; ls /sys/class/net | grep -c '^lo$'; touch /sys/x 2>/dev/null || echo sys-readonly"))
	d.startCtr(t, c)
	st := d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_EXITED)
	b, _ := os.ReadFile(st.LogPath)
	if st.ExitCode != 0 || !uidMapRe.Match(b) || !strings.Contains(string(b), "F 1\n") ||
		!strings.Contains(string(b), "sys-readonly") {
		t.Errorf("exit %d:\n%s", st.ExitCode, b)
	}
	d.removeAllPods(t)
	if after := residue(t, e, d); after != before {
		t.Errorf("left behind:\n%s\nbefore:\n%s", after, before)
	}
	d.stop(t)
}

// TestUserNamespaceRefusals: one bad request per row with its gRPC code;
// nothing is left behind.
func TestUserNamespaceRefusals(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n[runtime.handlers.runc]\nbinary = \"/usr/sbin/runc\"\n")
	if _, err := os.Stat("/usr/sbin/runc"); err != nil {
		t.Skip("needs runc (apt-get install runc)")
	}
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:usernsbad", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	before := residue(t, e, d)
	hostNet := func(c *runtimeapi.PodSandboxConfig) *runtimeapi.NamespaceOption {
		n := c.Linux.SecurityContext.NamespaceOptions
		n.Network = runtimeapi.NamespaceMode_NODE
		return n
	}
	two := []*runtimeapi.IDMapping{usernsMapping[0], {ContainerId: 65536, HostId: 500000, Length: 10}}
	for _, c := range []struct {
		name    string
		handler string
		mod     func(c *runtimeapi.PodSandboxConfig)
		code    codes.Code
	}{
		{"two uid mappings", "", func(c *runtimeapi.PodSandboxConfig) { hostNet(c).UsernsOptions.Uids = two }, codes.InvalidArgument},
		{"container id 0 not mapped", "", func(c *runtimeapi.PodSandboxConfig) {
			hostNet(c).UsernsOptions.Gids = []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 300000, Length: 10}}
		}, codes.InvalidArgument},
		{"mode CONTAINER", "", func(c *runtimeapi.PodSandboxConfig) {
			hostNet(c).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}
		}, codes.InvalidArgument},
		{"mode TARGET", "", func(c *runtimeapi.PodSandboxConfig) {
			hostNet(c).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}
		}, codes.InvalidArgument},
		{"NODE with mappings", "", func(c *runtimeapi.PodSandboxConfig) { hostNet(c).UsernsOptions.Mode = runtimeapi.NamespaceMode_NODE }, codes.InvalidArgument},
		{"the host's pid namespace", "", func(c *runtimeapi.PodSandboxConfig) { hostNet(c).Pid = runtimeapi.NamespaceMode_NODE }, codes.InvalidArgument},
		{"the host's ipc namespace", "", func(c *runtimeapi.PodSandboxConfig) { hostNet(c).Ipc = runtimeapi.NamespaceMode_NODE }, codes.InvalidArgument},
		{"mapping past 2^32", "", func(c *runtimeapi.PodSandboxConfig) {
			hostNet(c).UsernsOptions.Uids = []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 4294967000, Length: 65536}}
		}, codes.InvalidArgument},
		{"handler runc 1.1 (no idmapped mounts)", "runc", func(c *runtimeapi.PodSandboxConfig) { hostNet(c) }, codes.Unimplemented},
		{"unknown handler", "nope", func(c *runtimeapi.PodSandboxConfig) { hostNet(c) }, codes.NotFound},
	} {
		pc := proto.Clone(usernsPodConfig("bad", e.logs)).(*runtimeapi.PodSandboxConfig)
		c.mod(pc)
		_, err := d.rs.RunPodSandbox(bg, &runtimeapi.RunPodSandboxRequest{Config: pc, RuntimeHandler: c.handler})
		if status.Code(err) != c.code {
			t.Errorf("%s: got %v, want %v", c.name, err, c.code)
		}
	}
	pc := usernsPodConfig("good", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	for _, c := range []struct {
		name string
		mod  func(c *runtimeapi.ContainerConfig)
		code codes.Code
	}{
		{"uid mappings without gid mappings", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", HostPath: t.TempDir(), UidMappings: usernsMapping}}
		}, codes.InvalidArgument},
		{"an empty mapping", func(c *runtimeapi.ContainerConfig) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 300000}}
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", HostPath: t.TempDir(), UidMappings: m, GidMappings: m}}
		}, codes.InvalidArgument},
		{"idmapped /proc", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/hostproc", HostPath: "/proc", UidMappings: usernsMapping, GidMappings: usernsMapping}}
		}, codes.Unimplemented},
	} {
		cc := ctrConfig("bad", img, "true")
		c.mod(cc)
		_, err := d.rs.CreateContainer(bg, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cc, SandboxConfig: pc})
		if status.Code(err) != c.code {
			t.Errorf("%s: got %v, want %v", c.name, err, c.code)
		}
	}
	if l, _ := d.rs.ListContainers(bg, &runtimeapi.ListContainersRequest{}); len(l.GetContainers()) != 0 {
		t.Errorf("containers left: %v", l.GetContainers())
	}
	d.removeAllPods(t)
	if after := residue(t, e, d); after != before {
		t.Errorf("left behind:\n%s\nbefore:\n%s", after, before)
	}
	d.stop(t)
}
