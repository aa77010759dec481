package libct_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
)

var podMaps = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// ownerOf returns the inode number of the user namespace owning the
// namespace at path.
func ownerOf(t *testing.T, path string) uint64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ufd, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ufd)
	var st unix.Stat_t
	if err := unix.Fstat(ufd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func fileOwner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// TestHoldNamespaces: the held user namespace has the mappings, and the
// net, ipc and uts namespaces held with it are new and owned by it.
func TestHoldNamespaces(t *testing.T) {
	needRoot(t)
	h, err := libct.HoldNamespaces(ctx(t), "", unix.CLONE_NEWNET|unix.CLONE_NEWIPC|unix.CLONE_NEWUTS, podMaps, podMaps)
	if err != nil {
		t.Fatal(err)
	}
	proc := filepath.Dir(filepath.Dir(h.Path("user")))
	for _, f := range []string{"uid_map", "gid_map"} {
		b, err := os.ReadFile(filepath.Join(proc, f))
		if err != nil || strings.Join(strings.Fields(string(b)), " ") != "0 100000 65536" {
			t.Errorf("%s: %q %v", f, b, err)
		}
	}
	user := inode(t, h.Path("user"))
	if user == inode(t, "/proc/self/ns/user") {
		t.Fatal("the held user namespace is the host's")
	}
	for _, kind := range []string{"net", "ipc", "uts"} {
		if inode(t, h.Path(kind)) == inode(t, "/proc/self/ns/"+kind) {
			t.Errorf("%s: the host's namespace", kind)
		}
		if o := ownerOf(t, h.Path(kind)); o != user {
			t.Errorf("%s namespace owned by user namespace %d, want the held one %d", kind, o, user)
		}
	}
	if ownerOf(t, "/proc/self/ns/net") == user {
		t.Error("the host's net namespace is owned by the held user namespace")
	}
	h.Close()
	if _, err := os.Stat(proc); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("holder %s still there after Close: %v", proc, err)
	}
}

// TestHoldNamespacesRefusals: one row per bad request, with its class.
func TestHoldNamespacesRefusals(t *testing.T) {
	needRoot(t)
	cases := []struct {
		name  string
		exe   string
		flags uint32
		uid   []specs.LinuxIDMapping
		class error
	}{
		{"a pid namespace", "", unix.CLONE_NEWPID, podMaps, errdefs.ErrInvalidArgument},
		{"a mount namespace", "", unix.CLONE_NEWNS, podMaps, errdefs.ErrInvalidArgument},
		{"no uid mapping", "", 0, nil, errdefs.ErrInvalidArgument},
		{"an empty mapping", "", 0, []specs.LinuxIDMapping{{HostID: 1000}}, errdefs.ErrInvalidArgument},
		{"a binary without nsenter", "/bin/true", 0, podMaps, errdefs.ErrInternal},
	}
	for _, c := range cases {
		h, err := libct.HoldNamespaces(ctx(t), c.exe, c.flags, c.uid, podMaps)
		if err == nil {
			h.Close()
		}
		if !errors.Is(err, c.class) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.class)
		}
	}
}

// TestIDMappedMounts: in a container with a user namespace, bind mounts
// are made by the runtime (a 0700 host directory of root's is reachable),
// an idmapped one shows the host's ids as the container's own and stores
// what the container writes with the container's ids, a plain one shows
// unmapped host ids as nobody and stores writes with the mapped host ids.
func TestIDMappedMounts(t *testing.T) {
	needRoot(t)
	idm := t.TempDir() // 0700, root's
	os.WriteFile(filepath.Join(idm, "owned"), []byte("secret\n"), 0o600)
	os.Chown(filepath.Join(idm, "owned"), 0, 0)
	os.Mkdir(filepath.Join(idm, "u1000"), 0o700)
	os.Chown(filepath.Join(idm, "u1000"), 1000, 1000)
	plain := t.TempDir()
	os.Chmod(plain, 0o777)
	os.WriteFile(filepath.Join(plain, "f"), []byte("x"), 0o644)
	b := sh(t, `stat -c 'owned=%u:%g' /idm/owned; cat /idm/owned; echo new > /idm/new
su -s /bin/sh user -c 'echo u > /idm/u1000/byuser' && echo user-wrote
stat -c 'plain=%u' /plain/f; echo new > /plain/new && echo plain-wrote
mkdir /ro/x 2>/dev/null || echo ro-refused`)
	// The rootfs is not idmapped here (the engine does that): the mount
	// points exist already, the container's root could not make them.
	for _, d := range []string{"idm", "plain", "ro"} {
		os.Mkdir(filepath.Join(b.Rootfs, d), 0o755)
	}
	b.Spec.Process.Capabilities.Bounding = append(b.Spec.Process.Capabilities.Bounding, "CAP_SETUID", "CAP_SETGID")
	b.Spec.Process.Capabilities.Effective = b.Spec.Process.Capabilities.Bounding
	b.Spec.Process.Capabilities.Permitted = b.Spec.Process.Capabilities.Bounding
	b.Spec.Process.NoNewPrivileges = false
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	b.Spec.Linux.UIDMappings, b.Spec.Linux.GIDMappings = podMaps, podMaps
	b.Spec.Mounts = append(b.Spec.Mounts,
		specs.Mount{Destination: "/idm", Type: "bind", Source: idm, Options: []string{"rbind", "idmap"}},
		specs.Mount{Destination: "/plain", Type: "bind", Source: plain, Options: []string{"rbind"}},
		specs.Mount{Destination: "/ro", Type: "bind", Source: idm, Options: []string{"rbind", "ridmap", "ro"}},
	)
	out, es := run(t, b)
	if es.Code != 0 {
		t.Fatalf("exit %d: %s", es.Code, out)
	}
	for _, want := range []string{"owned=0:0", "secret", "user-wrote", "plain=65534", "plain-wrote", "ro-refused"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in the output:\n%s", want, out)
		}
	}
	// On the host: the idmapped mount stored the container's ids, the
	// plain one the host ids its user namespace maps them to.
	if u, g := fileOwner(t, filepath.Join(idm, "new")); u != 0 || g != 0 {
		t.Errorf("idmapped write owned by %d:%d on the host, want 0:0", u, g)
	}
	if u, _ := fileOwner(t, filepath.Join(idm, "u1000", "byuser")); u != 1000 {
		t.Errorf("idmapped write of container uid 1000 owned by %d on the host, want 1000", u)
	}
	if u, g := fileOwner(t, filepath.Join(plain, "new")); u != 100000 || g != 100000 {
		t.Errorf("plain write owned by %d:%d on the host, want 100000:100000", u, g)
	}
}

// TestIDMappedMountJoinedUserNamespace: a container joining a held user
// namespace by path (as a pod's containers do); a mount with the same
// mappings shows the files as the container's own, one with other mappings
// is idmapped through a user namespace of its own.
func TestIDMappedMountJoinedUserNamespace(t *testing.T) {
	needRoot(t)
	h, err := libct.HoldNamespaces(ctx(t), "", 0, podMaps, podMaps)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	other := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	b := sh(t, "cat /proc/self/uid_map; stat -c 'same=%u' /same/f; stat -c 'other=%u' /other/f")
	os.Mkdir(filepath.Join(b.Rootfs, "same"), 0o755)
	os.Mkdir(filepath.Join(b.Rootfs, "other"), 0o755)
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: h.Path("user")})
	b.Spec.Mounts = append(b.Spec.Mounts,
		specs.Mount{Destination: "/same", Type: "bind", Source: src, Options: []string{"rbind", "ridmap"}, UIDMappings: podMaps, GIDMappings: podMaps},
		specs.Mount{Destination: "/other", Type: "bind", Source: src, Options: []string{"rbind", "idmap"}, UIDMappings: other, GIDMappings: other},
	)
	out, es := run(t, b)
	if es.Code != 0 {
		t.Fatalf("exit %d: %s", es.Code, out)
	}
	for _, want := range []string{"same=0", "other=65534"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in the output:\n%s", want, out)
		}
	}
	if f := strings.Fields(out); len(f) < 3 || f[0] != "0" || f[1] != "100000" || f[2] != "65536" {
		t.Errorf("uid_map: %q", out)
	}
}

// TestIDMappedMountWithoutUserNamespace: a container in the host's user
// namespace sees an idmapped mount's files through its mappings.
func TestIDMappedMountWithoutUserNamespace(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 10}}
	b := sh(t, "stat -c 'f=%u:%g' /m/f")
	b.Spec.Mounts = append(b.Spec.Mounts,
		specs.Mount{Destination: "/m", Type: "bind", Source: src, Options: []string{"rbind", "idmap"}, UIDMappings: maps, GIDMappings: maps})
	out, es := run(t, b)
	if es.Code != 0 || !strings.Contains(out, "f=1000:1000\n") {
		t.Fatalf("exit %d: %q", es.Code, out)
	}
}
