package specgen

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

var bg = context.Background()

const testPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
# a comment
broken line without colons
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
default-user:x:1000:1000::/home/default-user:/bin/sh
`

const testGroup = `root:x:0:root
daemon:x:1:root,daemon
www-data:x:33:
nogroup:x:65534:
default-user:x:1000:
group-defined-in-image:x:50000:default-user,other
video:x:44: default-user , www-data
`

// rootfs makes a container root with /etc/passwd and /etc/group.
func rootfs(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "etc/passwd"), testPasswd)
	writeFile(t, filepath.Join(dir, "etc/group"), testGroup)
	return dir
}

func writeFile(t testing.TB, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func testPod() Pod {
	return Pod{
		ID: "pod1",
		Config: &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "uid-1"},
			Hostname:     "web-0",
			LogDirectory: "/var/log/pods/default_web_uid-1",
			Linux:        &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/besteffort/poduid-1"},
		},
		NetNS: "/run/shim/netns/pod1-net", IPCNS: "/run/shim/netns/pod1-ipc", UTSNS: "/run/shim/netns/pod1-uts",
		PIDNS:        "/proc/4242/ns/pid",
		HostnameFile: "/run/shim/pods/pod1/hostname", HostsFile: "/run/shim/pods/pod1/hosts",
		ResolvConfFile: "/run/shim/pods/pod1/resolv.conf", ShmPath: "/run/shim/pods/pod1/shm",
	}
}

func testContainer(t testing.TB) Container {
	return Container{
		ID: "ctr1",
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: "sha256:abc", UserSpecifiedImage: "busybox:1.36"},
			Linux:    &runtimeapi.LinuxContainerConfig{},
		},
		Image:    ocispec.ImageConfig{Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-c", "top"}, Env: []string{"PATH=/bin"}},
		ImageRef: "sha256:abc",
		Rootfs:   rootfs(t),
	}
}

func sc(c *Container) *runtimeapi.LinuxContainerSecurityContext {
	if c.Config.Linux == nil {
		c.Config.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	if c.Config.Linux.SecurityContext == nil {
		c.Config.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{}
	}
	return c.Config.Linux.SecurityContext
}

func podSC(p *Pod) *runtimeapi.LinuxSandboxSecurityContext {
	if p.Config.Linux == nil {
		p.Config.Linux = &runtimeapi.LinuxPodSandboxConfig{}
	}
	if p.Config.Linux.SecurityContext == nil {
		p.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{}
	}
	return p.Config.Linux.SecurityContext
}

func mustSpec(t *testing.T, p Pod, c Container, o Options) *specs.Spec {
	t.Helper()
	s, err := ContainerSpec(bg, p, c, o)
	if err != nil {
		t.Fatalf("ContainerSpec: %v", err)
	}
	return s
}

// wantClass fails unless err wraps class.
func wantClass(t *testing.T, err, class error) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error of class %v, got nil", class)
	}
	if !errors.Is(err, class) {
		t.Fatalf("want class %v, got %v (%s)", class, err, errdefs.Class(err))
	}
}

func findMount(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func hasNS(s *specs.Spec, t specs.LinuxNamespaceType) (specs.LinuxNamespace, bool) {
	for _, n := range s.Linux.Namespaces {
		if n.Type == t {
			return n, true
		}
	}
	return specs.LinuxNamespace{}, false
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

func contains(s []string, v string) bool { return slices.Contains(s, v) }
