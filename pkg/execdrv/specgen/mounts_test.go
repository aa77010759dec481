package specgen

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func destinations(m []specs.Mount) []string {
	var out []string
	for _, x := range m {
		out = append(out, x.Destination)
	}
	return out
}

func TestSortMounts(t *testing.T) {
	in := []specs.Mount{
		{Destination: "/a/b/c"}, {Destination: "/proc"}, {Destination: "/a/b"}, {Destination: "/dev/shm"},
		{Destination: "/a"}, {Destination: "/dev"}, {Destination: "/x/y/"},
	}
	got := destinations(sortMounts(in))
	want := []string{"/proc", "/a", "/dev", "/a/b", "/dev/shm", "/x/y/", "/a/b/c"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// Every mount's parent directory, when it is itself a mount, comes first.
func checkParentsFirst(t *testing.T, m []specs.Mount) {
	t.Helper()
	pos := map[string]int{}
	for i, x := range m {
		pos[x.Destination] = i
	}
	for i, x := range m {
		for p := filepath.Dir(x.Destination); p != "/"; p = filepath.Dir(p) {
			if j, ok := pos[p]; ok && j > i {
				t.Fatalf("%s (at %d) comes before its parent %s (at %d): %v", x.Destination, i, p, j, destinations(m))
			}
		}
	}
}

func TestContainerMounts(t *testing.T) {
	host := t.TempDir()
	vol := filepath.Join(host, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(host, "vol-symlink")
	if err := os.Symlink(vol, link); err != nil {
		t.Fatal(err)
	}
	p := testPod()
	c := testContainer(t)
	c.Config.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/etc/app/conf", HostPath: vol, Readonly: true},
		{ContainerPath: "/data", HostPath: link, SelinuxRelabel: true},
		{ContainerPath: "/etc", HostPath: vol, Readonly: true, RecursiveReadOnly: true, MountOptions: []string{"noexec", "nosuid"}},
		{ContainerPath: "/etc/hosts", HostPath: vol},
	}
	c.VolumeDir = filepath.Join(host, "volumes")
	c.Image.Volumes = map[string]struct{}{"/var/cache": {}, "data": {}, "/": {}}
	s := mustSpec(t, p, c, Options{})
	checkParentsFirst(t, s.Mounts)

	want := map[string]specs.Mount{
		"/etc/app/conf": {Destination: "/etc/app/conf", Type: "bind", Source: vol, Options: []string{"rbind", "rprivate", "ro"}},
		"/data":         {Destination: "/data", Type: "bind", Source: vol, Options: []string{"rbind", "rprivate", "rw"}},
		"/etc":          {Destination: "/etc", Type: "bind", Source: vol, Options: []string{"rbind", "rprivate", "ro", "rro", "noexec", "nosuid"}},
		"/etc/hosts":    {Destination: "/etc/hosts", Type: "bind", Source: vol, Options: []string{"rbind", "rprivate", "rw"}},
		"/etc/hostname": {Destination: "/etc/hostname", Type: "bind", Source: p.HostnameFile, Options: []string{"rbind", "rprivate", "rw"}},
		"/etc/resolv.conf": {Destination: "/etc/resolv.conf", Type: "bind", Source: p.ResolvConfFile,
			Options: []string{"rbind", "rprivate", "rw"}},
		"/dev/shm": {Destination: "/dev/shm", Type: "bind", Source: p.ShmPath, Options: []string{"rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"}},
	}
	for dst, w := range want {
		m := findMount(s, dst)
		if m == nil {
			t.Fatalf("no mount at %s: %v", dst, destinations(s.Mounts))
		}
		if !reflect.DeepEqual(*m, w) {
			t.Errorf("mount %s:\n got %+v\nwant %+v", dst, *m, w)
		}
	}
	// Exactly one mount per destination: the CRI /etc/hosts replaced the
	// pod's.
	seen := map[string]bool{}
	for _, m := range s.Mounts {
		if seen[m.Destination] {
			t.Fatalf("two mounts at %s", m.Destination)
		}
		seen[m.Destination] = true
	}
	for _, d := range []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup"} {
		if findMount(s, d) == nil {
			t.Errorf("default mount %s missing", d)
		}
	}
	if findMount(s, "/run") != nil {
		t.Error("/run must stay the image's")
	}
	if !contains(findMount(s, "/sys").Options, "ro") || !contains(findMount(s, "/sys/fs/cgroup").Options, "ro") {
		t.Error("/sys and /sys/fs/cgroup must be read-only without privileges")
	}
	// Image volumes: /var/cache from the volume dir; "data" is covered by
	// the CRI mount at /data; "/" is never a volume.
	vc := findMount(s, "/var/cache")
	if vc == nil || filepath.Dir(vc.Source) != c.VolumeDir || vc.Type != "bind" {
		t.Fatalf("image volume /var/cache: %+v", vc)
	}
	vols, err := ImageVolumes(c)
	if err != nil || len(vols) != 1 || vols[0].Source != vc.Source {
		t.Fatalf("ImageVolumes: %+v %v", vols, err)
	}
	if s.Linux.RootfsPropagation != "" {
		t.Fatalf("rootfs propagation %q with private mounts only", s.Linux.RootfsPropagation)
	}
}

func TestContainerMountsReadonlyRootfs(t *testing.T) {
	p := testPod()
	c := testContainer(t)
	sc(&c).ReadonlyRootfs = true
	s := mustSpec(t, p, c, Options{})
	if !s.Root.Readonly {
		t.Fatal("root not read-only")
	}
	for _, d := range []string{etcHostname, etcHosts, etcResolvConf} {
		if m := findMount(s, d); m == nil || !contains(m.Options, "ro") {
			t.Errorf("%s must be read-only with a read-only rootfs: %+v", d, m)
		}
	}
	if m := findMount(s, devShm); m == nil || !contains(m.Options, "rw") {
		t.Errorf("/dev/shm stays writable: %+v", m)
	}
}

func TestShmMount(t *testing.T) {
	p := testPod()
	p.ShmPath = ""
	if m := podShm(p, false); m.Type != "tmpfs" || m.Destination != devShm {
		t.Fatalf("no pod shm: %+v", m)
	}
	podSC(&p).NamespaceOptions = &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}
	if m := podShm(p, false); m.Type != "bind" || m.Source != "/dev/shm" {
		t.Fatalf("host IPC shm: %+v", m)
	}
}

func TestCRIMountErrors(t *testing.T) {
	dir := t.TempDir()
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.Symlink(b, a); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(a, b); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		m     []*runtimeapi.Mount
		class error
	}{
		{"missing host path", []*runtimeapi.Mount{{ContainerPath: "/x", HostPath: filepath.Join(dir, "missing")}}, errdefs.ErrNotFound},
		{"dangling symlink", []*runtimeapi.Mount{{ContainerPath: "/x", HostPath: dangling}}, errdefs.ErrNotFound},
		{"symlink loop", []*runtimeapi.Mount{{ContainerPath: "/x", HostPath: loop}}, errdefs.ErrInvalidArgument},
		{"two-link loop", []*runtimeapi.Mount{{ContainerPath: "/x", HostPath: a}}, errdefs.ErrInvalidArgument},
		{"same path twice", []*runtimeapi.Mount{{ContainerPath: "/x", HostPath: dir}, {ContainerPath: "/x/", HostPath: dir}}, errdefs.ErrInvalidArgument},
		{"image mount the engine did not mount", []*runtimeapi.Mount{{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "sha256:1"}}},
			errdefs.ErrNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testContainer(t)
			c.Config.Mounts = tc.m
			_, err := ContainerSpec(bg, testPod(), c, Options{})
			wantClass(t, err, tc.class)
		})
	}
}

func TestImageMount(t *testing.T) {
	img := t.TempDir()
	writeFile(t, filepath.Join(img, "etc/passwd"), "root:x:0:0::/:/bin/sh\n")
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(img, "escape")); err != nil {
		t.Fatal(err)
	}
	c := testContainer(t)
	c.ImageMounts = map[string]string{"/mnt/image": img}
	c.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: "/mnt/image", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "sha256:1"}}}
	s := mustSpec(t, testPod(), c, Options{})
	m := findMount(s, "/mnt/image")
	if m == nil || m.Source != img || !contains(m.Options, "ro") || contains(m.Options, "noexec") {
		t.Fatalf("image mount: %+v", m)
	}
	c.Config.Mounts[0].ImageSubPath = "etc"
	s = mustSpec(t, testPod(), c, Options{})
	if m := findMount(s, "/mnt/image"); m.Source != filepath.Join(img, "etc") {
		t.Fatalf("sub path: %+v", m)
	}
	c.Config.Mounts[0].ImageSubPath = "missing"
	_, err := ContainerSpec(bg, testPod(), c, Options{})
	wantClass(t, err, errdefs.ErrNotFound)
	// A symlink in the image cannot point the mount out of the image: it
	// resolves inside the image, where its target does not exist...
	c.Config.Mounts[0].ImageSubPath = "escape"
	_, err = ContainerSpec(bg, testPod(), c, Options{})
	wantClass(t, err, errdefs.ErrNotFound)
	// ... and when it does, that is what is mounted.
	if err := os.MkdirAll(filepath.Join(img, outside), 0o755); err != nil {
		t.Fatal(err)
	}
	s = mustSpec(t, testPod(), c, Options{})
	if m := findMount(s, "/mnt/image"); m.Source != filepath.Join(img, outside) || !strings.HasPrefix(m.Source, img+"/") {
		t.Fatalf("sub path left the image: %+v", m)
	}
}

// mountAt bind-mounts dir on itself with the given propagation, undone at
// the end of the test.
func mountAt(t *testing.T, dir string, prop uintptr) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", prop, ""); err != nil {
		t.Fatal(err)
	}
}

func TestPropagation(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	shared := filepath.Join(base, "shared")
	private := filepath.Join(base, "private")
	for _, d := range []string{shared, private} {
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mountAt(t, shared, unix.MS_SHARED)
	mountAt(t, private, unix.MS_PRIVATE)

	for _, tc := range []struct {
		name     string
		src      string
		prop     runtimeapi.MountPropagation
		wantOpt  string
		wantRoot string
		class    error
	}{
		{"private on private", private, runtimeapi.MountPropagation_PROPAGATION_PRIVATE, "rprivate", "", nil},
		{"rshared on shared", shared, runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, "rshared", "rshared", nil},
		{"rslave on shared", filepath.Join(shared, "sub"), runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, "rslave", "rslave", nil},
		{"rshared on private", private, runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, "", "", errdefs.ErrFailedPrecondition},
		{"rslave on private", filepath.Join(private, "sub"), runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, "", "", errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod()
			podSC(&p).Privileged = true
			c := testContainer(t)
			sc(&c).Privileged = true
			c.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: tc.src, HostPath: tc.src, Propagation: tc.prop}}
			s, err := ContainerSpec(bg, p, c, Options{})
			if tc.class != nil {
				wantClass(t, err, tc.class)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m := findMount(s, tc.src); m == nil || !contains(m.Options, tc.wantOpt) {
				t.Fatalf("mount: %+v", m)
			}
			if s.Linux.RootfsPropagation != tc.wantRoot {
				t.Fatalf("rootfs propagation %q, want %q", s.Linux.RootfsPropagation, tc.wantRoot)
			}
		})
	}

	// rshared wins over rslave for the rootfs.
	c := testContainer(t)
	p := testPod()
	c.Config.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/a", HostPath: shared, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		{ContainerPath: "/b", HostPath: shared, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
	}
	if s := mustSpec(t, p, c, Options{}); s.Linux.RootfsPropagation != "rshared" {
		t.Fatalf("rootfs propagation %q", s.Linux.RootfsPropagation)
	}
}

func TestImageVolumesStable(t *testing.T) {
	c := Container{
		Config:    &runtimeapi.ContainerConfig{},
		Image:     ocispec.ImageConfig{Volumes: map[string]struct{}{"/b": {}, "/a/": {}, "a": {}}},
		VolumeDir: "/vols",
	}
	v1, err := ImageVolumes(c)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := ImageVolumes(c)
	if len(v1) != 2 || v1[0].Destination != "/a" || v1[1].Destination != "/b" || !reflect.DeepEqual(v1, v2) {
		t.Fatalf("got %+v", v1)
	}
	if v1[0].Source == v1[1].Source || filepath.Dir(v1[0].Source) != "/vols" {
		t.Fatalf("sources: %+v", v1)
	}
	c.VolumeDir = ""
	if v, _ := ImageVolumes(c); v != nil {
		t.Fatalf("no volume dir: %+v", v)
	}
	c.VolumeDir = "/vols"
	c.Image.Volumes["/x\n"] = struct{}{}
	_, err = ImageVolumes(c)
	wantClass(t, err, errdefs.ErrInvalidArgument)
}
