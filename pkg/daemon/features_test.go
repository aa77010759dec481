package daemon

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// withFiles is img with a layer of the given files (path: content).
func withFiles(t *testing.T, img v1.Image, files map[string]string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := tarDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	out, err := mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStatusFeatures: Status reports the handlers with what each can do
// here (native: recursive read-only and user namespaces; Debian's runc
// 1.1: recursive read-only only, it has no idmapped mounts) and the
// runtime-wide features.
func TestStatusFeatures(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/runc"); err != nil {
		t.Skip("needs runc (apt-get install runc)")
	}
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n[runtime.handlers.runc]\nbinary = \"/usr/sbin/runc\"\n")
	d := e.start()
	r, err := d.rs.Status(bg, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]bool{}
	var names []string
	for _, h := range r.RuntimeHandlers {
		names = append(names, h.Name)
		got[h.Name] = [2]bool{h.GetFeatures().GetRecursiveReadOnlyMounts(), h.GetFeatures().GetUserNamespaces()}
	}
	want := map[string][2]bool{"": {true, true}, "native": {true, true}, "runc": {true, false}}
	if !reflect.DeepEqual(got, want) || names[0] != "" {
		t.Errorf("handlers %v (rro, userns) %v, want %v with the default first", names, got, want)
	}
	f := r.GetFeatures()
	if !f.GetSupplementalGroupsPolicy() || !f.GetUserNamespacesHostNetwork() || !f.GetMountOptions() {
		t.Errorf("features %+v", f)
	}
	d.stop(t)
}

// TestMountFeatures: recursive read-only mounts reach submounts, plain
// read-only ones do not; mount_options apply; an image volume with a
// sub path mounts that directory of the image, a missing sub path is
// NotFound.
func TestMountFeatures(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:mounts", busyboxImage(t, nil, []string{"sh"}))
	data := reg.push(t, "test/data:1", withFiles(t, busyboxImage(t, nil, []string{"sh"}),
		map[string]string{"sub/dir/file": "from the image volume\n", "top": "top\n"}))
	d := e.start()
	d.pull(t, img)
	d.pull(t, data)
	before := residue(t, e, d)

	host := t.TempDir()
	os.Chmod(host, 0o755)
	os.Mkdir(filepath.Join(host, "tmpfs"), 0o755)
	if err := unix.Mount("tmpfs", filepath.Join(host, "tmpfs"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(host, "tmpfs"), unix.MNT_DETACH)
	os.WriteFile(filepath.Join(host, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755)

	pc := podConfig("mounts", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	cc := ctrConfig("c", img, "sh", "-c", `touch /rro/tmpfs/x 2>&1 | grep -q 'Read-only' && echo rro-submount-readonly
touch /ro/tmpfs/y && echo ro-submount-writable
/exec/run.sh; /noexec/run.sh 2>/dev/null || echo noexec-refused
grep ' /noexec ' /proc/self/mountinfo | grep -q 'nosuid,nodev,noexec' && echo noexec-flags
cat /iv/file; test -e /iv/top || echo subpath-only`)
	cc.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/rro", HostPath: host, Readonly: true, RecursiveReadOnly: true},
		{ContainerPath: "/ro", HostPath: host, Readonly: true},
		{ContainerPath: "/exec", HostPath: host, Readonly: true},
		{ContainerPath: "/noexec", HostPath: host, MountOptions: []string{"noexec", "nodev", "nosuid"}},
		{ContainerPath: "/iv", Readonly: true, Image: &runtimeapi.ImageSpec{Image: data}, ImageSubPath: "sub/dir"},
	}
	c := d.create(t, pod, pc, cc)
	d.startCtr(t, c)
	st := d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_EXITED)
	b, _ := os.ReadFile(st.LogPath)
	for _, want := range []string{"rro-submount-readonly", "ro-submount-writable", "ran", "noexec-refused", "noexec-flags",
		"from the image volume", "subpath-only"} {
		if !strings.Contains(string(b), "F "+want+"\n") {
			t.Errorf("want %q in the log:\n%s", want, b)
		}
	}
	for _, m := range st.Mounts {
		if m.ContainerPath == "/iv" && !strings.HasPrefix(m.GetImage().GetImageRef(), "sha256:") {
			t.Errorf("image volume status %+v: want the image id", m)
		}
	}
	bad := ctrConfig("bad", img, "true")
	bad.Mounts = []*runtimeapi.Mount{{ContainerPath: "/iv", Readonly: true, Image: &runtimeapi.ImageSpec{Image: data}, ImageSubPath: "no/such"}}
	_, err := d.rs.CreateContainer(bg, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: bad, SandboxConfig: pc})
	if status.Code(err) != codes.NotFound {
		t.Errorf("missing image sub path: got %v, want NotFound", err)
	}
	d.removeAllPods(t)
	if after := residue(t, e, d); after != before {
		t.Errorf("left behind:\n%s\nbefore:\n%s", after, before)
	}
	d.stop(t)
}

// TestSupplementalGroupsPolicy: Merge adds the groups the image's
// /etc/group gives the user, Strict does not; the container status
// reports the process's user either way.
func TestSupplementalGroupsPolicy(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/groups:1", withFiles(t, busyboxImage(t, nil, []string{"sh"}),
		map[string]string{"etc/group": "root:x:0:\nuser:x:1000:\nextra:x:50000:user\n"}))
	d := e.start()
	d.pull(t, img)
	pc := podConfig("groups", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	for _, c := range []struct {
		policy runtimeapi.SupplementalGroupsPolicy
		want   string
		groups []int64
	}{
		{runtimeapi.SupplementalGroupsPolicy_Merge, "1000 1234 50000", []int64{1000, 50000, 1234}},
		{runtimeapi.SupplementalGroupsPolicy_Strict, "1000 1234", []int64{1000, 1234}},
	} {
		// id -G shows the groups as the kernel sorts them; the status
		// has the process's primary group, the image's, the pod's.
		name := strings.ToLower(c.policy.String())
		cc := ctrConfig(name, img, "sh", "-c", "id -G")
		cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			RunAsUser: &runtimeapi.Int64Value{Value: 1000}, SupplementalGroups: []int64{1234}, SupplementalGroupsPolicy: c.policy}}
		id := d.create(t, pod, pc, cc)
		d.startCtr(t, id)
		st := d.waitState(t, id, runtimeapi.ContainerState_CONTAINER_EXITED)
		b, _ := os.ReadFile(st.LogPath)
		if !strings.Contains(string(b), "F "+c.want+"\n") {
			t.Errorf("%s: id -G:\n%s", name, b)
		}
		u := st.GetUser().GetLinux()
		if u.GetUid() != 1000 || u.GetGid() != 1000 || !reflect.DeepEqual(u.GetSupplementalGroups(), c.groups) {
			t.Errorf("%s: status user %+v, want uid 1000 gid 1000 groups %v", name, u, c.groups)
		}
	}
	d.removeAllPods(t)
	d.stop(t)
}
