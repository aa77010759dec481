package daemon

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/libct"
)

// residue lists what requests can leave behind: pod and container
// directories, pins, mounts under the state dir, and records.
func residue(t *testing.T, e *testEnv, d *daemonProc) string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(e.state, "pods"), func(p string, de os.DirEntry, err error) error {
		if err == nil {
			out = append(out, strings.TrimPrefix(p, e.state))
		}
		if de != nil && de.IsDir() && strings.Count(strings.TrimPrefix(p, e.state), "/") >= 4 {
			return filepath.SkipDir
		}
		return nil
	})
	pins, _ := os.ReadDir(filepath.Join(e.state, "ns"))
	for _, p := range pins {
		out = append(out, "pin:"+p.Name())
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], e.state+"/") && f[4] != filepath.Join(e.state, "ns") {
			out = append(out, "mount:"+f[4])
		}
	}
	pods, _ := d.rs.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{})
	for _, p := range pods.GetItems() {
		out = append(out, "pod:"+p.Metadata.Name)
	}
	ctrs, _ := d.rs.ListContainers(bg, &runtimeapi.ListContainersRequest{})
	for _, c := range ctrs.GetContainers() {
		out = append(out, "ctr:"+c.Metadata.Name)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestHostileRequests sends bad requests, one per row, and checks the gRPC
// code and that nothing was left behind.
func TestHostileRequests(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimt4", "10.213.74.0/24")+"[image]\nsandbox_image = \"PAUSE\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	// Pods that need an infra process get it from the loopback registry.
	pause := reg.push(t, "test/pause:1", busyboxImage(t, []string{"sleep", "1000000"}, nil))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "PAUSE", pause, 1)), 0o600)
	d := e.start()
	d.pull(t, img)

	base := podConfig("base", e.logs)
	pod := d.runPod(t, base)
	d.create(t, pod, base, ctrConfig("taken", img, "sleep", "1000"))
	gone := podConfig("gone", e.logs)
	gonePod := d.runPod(t, gone)
	if _, err := d.rs.RemovePodSandbox(bg, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: gonePod}); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(t.TempDir(), "loop")
	os.Symlink(loop, loop)

	withPod := func(f func(c *runtimeapi.PodSandboxConfig)) func() error {
		return func() error {
			c := proto.Clone(podConfig("hostile", e.logs)).(*runtimeapi.PodSandboxConfig)
			f(c)
			_, err := d.rs.RunPodSandbox(bg, &runtimeapi.RunPodSandboxRequest{Config: c})
			return err
		}
	}
	withCtr := func(podID string, f func(c *runtimeapi.ContainerConfig)) func() error {
		return func() error {
			c := ctrConfig("hostile", img, "sleep", "1000")
			f(c)
			_, err := d.rs.CreateContainer(bg, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: c, SandboxConfig: base})
			return err
		}
	}
	// kubelet's pod log directories can have names longer than the
	// kernel takes (<namespace>_<name>_<uid>): the pod runs, its
	// containers' logs cannot be opened (InvalidArgument, not Unknown).
	longLogs := podConfig("longlogs", e.logs)
	longLogs.LogDirectory = filepath.Join(e.logs, strings.Repeat("d", 256))
	longLogsPod := d.runPod(t, longLogs)
	// A profile or label the host cannot apply is refused, never ignored.
	// The test profile is loaded on no host; SELinux options are refused
	// where the host has no SELinux (on an SELinux host they are applied:
	// the row is left out there).
	const apparmorCode = codes.FailedPrecondition
	selinuxRefused := func() error { return status.Error(codes.FailedPrecondition, "host has SELinux: row left out") }
	if !libct.HostLSM().SELinux {
		selinuxRefused = withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				SelinuxOptions: &runtimeapi.SELinuxOption{Level: "s0:c1,c2"}}}
		})
	}
	before := residue(t, e, d)
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"pod without a name", withPod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "" }), codes.InvalidArgument},
		{"pod without metadata", withPod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata = nil }), codes.InvalidArgument},
		{"pod name with a newline", withPod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\nb" }), codes.InvalidArgument},
		{"unnamespaced sysctl", withPod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"vm.swappiness": "10"}
		}), codes.InvalidArgument},
		{"sysctl value with a newline", withPod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1\nkernel.hostname=x"}
		}), codes.InvalidArgument},
		{"sysctl value with a NUL", withPod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1\x00"}
		}), codes.InvalidArgument},
		{"DNS server with a newline", withPod(func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"1.1.1.1\nnameserver 6.6.6.6"}}
		}), codes.InvalidArgument},
		{"70,000-byte log directory", withPod(func(c *runtimeapi.PodSandboxConfig) {
			c.LogDirectory = "/" + strings.Repeat("d", 70000)
		}), codes.InvalidArgument},
		{"bad port mapping", withPod(func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 70000}}
		}), codes.InvalidArgument},
		{"unknown runtime handler", func() error {
			_, err := d.rs.RunPodSandbox(bg, &runtimeapi.RunPodSandboxRequest{Config: podConfig("h2", e.logs), RuntimeHandler: "nope"})
			return err
		}, codes.NotFound},
		{"container without a name", withCtr(pod, func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "" }), codes.InvalidArgument},
		{"duplicate container name", withCtr(pod, func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "taken" }), codes.AlreadyExists},
		{"log path with ..", withCtr(pod, func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../etc/evil.log" }), codes.InvalidArgument},
		{"log path with a 256-byte name", withCtr(pod, func(c *runtimeapi.ContainerConfig) { c.LogPath = strings.Repeat("l", 256) }), codes.InvalidArgument},
		{"log directory with a 256-byte name", withCtr(longLogsPod, func(*runtimeapi.ContainerConfig) {}), codes.InvalidArgument},
		{"absolute log path", withCtr(pod, func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/evil.log" }), codes.InvalidArgument},
		{"host path symlink loop", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{HostPath: loop, ContainerPath: "/mnt"}}
		}), codes.InvalidArgument},
		{"missing host path", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{HostPath: "/nonexistent/shim-test", ContainerPath: "/mnt"}}
		}), codes.NotFound},
		{"huge numeric user", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUser: &runtimeapi.Int64Value{Value: 1 << 40}}}
		}), codes.InvalidArgument},
		{"negative cpu shares", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: -5}}
		}), codes.InvalidArgument},
		{"negative memory", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}}
		}), codes.InvalidArgument},
		{"AppArmor profile the host has not loaded", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "shim-test-not-loaded"}}}
		}), apparmorCode},
		{"deprecated AppArmor field with a profile the host has not loaded", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				ApparmorProfile: "localhost/shim-test-not-loaded"}}
		}), apparmorCode},
		{"unknown deprecated AppArmor value", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "bogus"}}
		}), codes.InvalidArgument},
		{"pod AppArmor profile the host has not loaded", withPod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "shim-test-not-loaded"}}
		}), apparmorCode},
		{"SELinux options on a host without SELinux", selinuxRefused, codes.FailedPrecondition},
		{"SELinux type with a colon", withCtr(pod, func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				SelinuxOptions: &runtimeapi.SELinuxOption{Type: "container_t:s0"}}}
		}), codes.InvalidArgument},
		{"image not present", withCtr(pod, func(c *runtimeapi.ContainerConfig) { c.Image.Image = "nothere:1" }), codes.NotFound},
		{"container in a removed pod", withCtr(gonePod, func(*runtimeapi.ContainerConfig) {}), codes.NotFound},
		{"container in an unknown pod", withCtr("0123456789abcdef", func(*runtimeapi.ContainerConfig) {}), codes.NotFound},
		{"start an unknown container", func() error {
			_, err := d.rs.StartContainer(bg, &runtimeapi.StartContainerRequest{ContainerId: "0123456789abcdef"})
			return err
		}, codes.NotFound},
		{"status of an unknown pod", func() error {
			_, err := d.rs.PodSandboxStatus(bg, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "0123456789abcdef"})
			return err
		}, codes.NotFound},
		{"exec in an unknown container", func() error {
			_, err := d.rs.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: "0123456789abcdef", Cmd: []string{"true"}})
			return err
		}, codes.NotFound},
		{"empty container id", func() error {
			_, err := d.rs.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{})
			return err
		}, codes.InvalidArgument},
		{"stop an unknown pod", func() error {
			_, err := d.rs.StopPodSandbox(bg, &runtimeapi.StopPodSandboxRequest{PodSandboxId: "0123456789abcdef"})
			return err
		}, codes.OK},
		{"remove an unknown container", func() error {
			_, err := d.rs.RemoveContainer(bg, &runtimeapi.RemoveContainerRequest{ContainerId: "0123456789abcdef"})
			return err
		}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := status.Code(err); got != tc.code {
				t.Errorf("got %v (%v), want %v", got, err, tc.code)
			}
			if after := residue(t, e, d); after != before {
				t.Errorf("left behind:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	// The same pod config twice gives the same pod, never a second one.
	again := d.runPod(t, base)
	if again != pod {
		t.Errorf("second RunPodSandbox of the same pod gave %s, want %s", again, pod)
	}
	l, _ := d.rs.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{})
	if len(l.Items) != 2 { // base and longlogs
		t.Errorf("%d pods after a repeated RunPodSandbox", len(l.Items))
	}
	d.removeAllPods(t)
	d.stop(t)
}
