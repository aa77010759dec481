package specgen

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func usernsPod() Pod {
	p := testPod()
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	podSC(&p).NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER,
		UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}
	p.UserNS = "/run/shim/ns/pod1-user"
	return p
}

var podMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}

func idmapped(m *specs.Mount, want []specs.LinuxIDMapping) bool {
	return m != nil && contains(m.Options, "idmap") && !contains(m.Options, "ridmap") &&
		reflect.DeepEqual(m.UIDMappings, want) && reflect.DeepEqual(m.GIDMappings, want)
}

// TestUsernsMounts: in a pod with a user namespace, the bind mounts the
// runtime provides are idmapped with the pod's mappings, kubelet's mounts
// are idmapped with the mappings they carry, and nothing else is.
func TestUsernsMounts(t *testing.T) {
	host := t.TempDir()
	vol := filepath.Join(host, "vol")
	os.Mkdir(vol, 0o755)
	p := usernsPod()
	c := testContainer(t)
	kubelet := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	other := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 300000, Length: 1000}}
	c.Config.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/kubelet-vol", HostPath: vol, UidMappings: kubelet, GidMappings: kubelet},
		{ContainerPath: "/other-vol", HostPath: vol, UidMappings: other, GidMappings: other, MountOptions: []string{"noexec"}},
		{ContainerPath: "/plain-vol", HostPath: vol},
	}
	c.VolumeDir = filepath.Join(host, "volumes")
	c.Image.Volumes = map[string]struct{}{"/cache": {}}
	s := mustSpec(t, p, c, Options{})
	for _, dst := range []string{"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm", "/cache", "/kubelet-vol"} {
		if m := findMount(s, dst); !idmapped(m, podMappings) {
			t.Errorf("%s: want idmapped with the pod's mappings: %+v", dst, m)
		}
	}
	if m := findMount(s, "/other-vol"); !idmapped(m, []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 1000}}) || !contains(m.Options, "noexec") {
		t.Errorf("/other-vol: want idmapped with its own mappings: %+v", m)
	}
	for _, dst := range []string{"/plain-vol", "/proc", "/sys", "/dev"} {
		if m := findMount(s, dst); m == nil || contains(m.Options, "idmap") || m.UIDMappings != nil {
			t.Errorf("%s: want no idmapping: %+v", dst, m)
		}
	}
	if n, ok := hasNS(s, specs.UserNamespace); !ok || n.Path != p.UserNS || s.Linux.UIDMappings != nil {
		t.Errorf("user namespace %+v, mappings %v: want the pod's pinned one", n, s.Linux.UIDMappings)
	}

	// The same container in a pod without a user namespace: only the
	// mount with mappings of its own is idmapped.
	s = mustSpec(t, testPod(), c, Options{})
	for _, dst := range []string{"/etc/hostname", "/dev/shm", "/cache", "/plain-vol"} {
		if m := findMount(s, dst); m == nil || contains(m.Options, "idmap") {
			t.Errorf("no userns: %s: want no idmapping: %+v", dst, m)
		}
	}
	if m := findMount(s, "/kubelet-vol"); !idmapped(m, podMappings) {
		t.Errorf("no userns: /kubelet-vol keeps its mappings: %+v", m)
	}
	if _, ok := hasNS(s, specs.UserNamespace); ok {
		t.Error("no userns: a user namespace in the spec")
	}
}

// TestUsernsInfra: the infra process joins the pod's user namespace and
// gets the pod's /dev/shm idmapped.
func TestUsernsInfra(t *testing.T) {
	p := usernsPod()
	podSC(&p).NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	s, err := InfraSpec(bg, p, rootfs(t), ocispec.ImageConfig{Entrypoint: []string{"/pause"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := hasNS(s, specs.UserNamespace); !ok || n.Path != p.UserNS {
		t.Errorf("infra user namespace %+v", n)
	}
	if m := findMount(s, "/dev/shm"); !idmapped(m, podMappings) {
		t.Errorf("infra /dev/shm: %+v", m)
	}
}

// TestUsernsPodValidation: a pod user namespace with the host's network is
// accepted (user_namespaces_host_network).
func TestUsernsPodValidation(t *testing.T) {
	p := usernsPod()
	podSC(&p).NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	if err := ValidatePodConfig(p.Config); err != nil {
		t.Fatal(err)
	}
}
