package snapshot

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

const nsRoot = 300000

// userns starts a process in a new user namespace mapping 0-65535 to
// nsRoot and returns an fd of that namespace.
func userns(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: nsRoot, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: nsRoot, Size: 65536}}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func owner(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// asNSRoot runs a shell command with the host credentials of the user
// namespace's root, as the container's root writes.
func asNSRoot(t *testing.T, script string) {
	t.Helper()
	out, err := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", nsRoot), fmt.Sprintf("--regid=%d", nsRoot), "--clear-groups",
		"sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", script, err, out)
	}
}

// TestMountAllIDMapped: a container root made of idmapped layers shows the
// image's files as the namespace's; the namespace's root writes new files
// and copies up old ones into the upper layer with its host ids; a view
// (bind) is idmapped and read-only; nothing stays mounted.
func TestMountAllIDMapped(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	ns := userns(t)
	dir := t.TempDir()
	// The namespace's root reaches the mounts through these (0700).
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	mk := func(p string) string { p = filepath.Join(dir, p); os.MkdirAll(p, 0o755); return p }
	l1, l2, upper, work, merged, view := mk("1/fs"), mk("2/fs"), mk("3/fs"), mk("3/work"), mk("merged"), mk("view")
	os.WriteFile(filepath.Join(l1, "image-file"), []byte("x\n"), 0o666)
	os.Mkdir(filepath.Join(l2, "etc"), 0o755)
	os.Chown(filepath.Join(l2, "etc"), 1000, 1000)
	ovl := Mount{Type: "overlay", Source: "overlay", Options: []string{"index=off",
		"workdir=" + work, "upperdir=" + upper, "lowerdir=" + l1 + ":" + l2}}
	m := IDMap{UsernsFd: ns, UID: nsRoot, GID: nsRoot}
	if err := MountAllIDMapped([]Mount{ovl}, merged, m); err != nil {
		t.Fatal(err)
	}
	defer UnmountAll(merged)
	for p, want := range map[string]string{"image-file": "300000:300000", "etc": "301000:301000", ".": "300000:300000"} {
		if got := owner(t, filepath.Join(merged, p)); got != want {
			t.Errorf("%s seen as %s through the overlay, want %s", p, got, want)
		}
	}
	asNSRoot(t, "echo new > "+merged+"/new; echo more >> "+merged+"/image-file; mkdir "+merged+"/d")
	for p, want := range map[string]string{"new": "300000:300000", "image-file": "300000:300000", "d": "300000:300000"} {
		if got := owner(t, filepath.Join(upper, p)); got != want {
			t.Errorf("upper %s is %s on disk, want %s", p, got, want)
		}
	}
	if got := owner(t, filepath.Join(l1, "image-file")); got != "0:0" {
		t.Errorf("the image's layer changed: %s", got)
	}
	if err := UnmountAll(merged); err != nil {
		t.Fatal(err)
	}

	if err := MountAllIDMapped([]Mount{{Type: "bind", Source: l1, Options: []string{"ro", "rbind"}}}, view, m); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, filepath.Join(view, "image-file")); got != "300000:300000" {
		t.Errorf("view: %s", got)
	}
	if err := os.WriteFile(filepath.Join(view, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to a read-only view: %v", err)
	}
	if err := UnmountAll(view); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name  string
		m     Mount
		class error
	}{
		{"tmpfs", Mount{Type: "tmpfs", Source: "tmpfs"}, errdefs.ErrNotImplemented},
		{"overlay without layers", Mount{Type: "overlay", Source: "overlay", Options: []string{"index=off"}}, errdefs.ErrInvalidArgument},
		{"upper without work", Mount{Type: "overlay", Source: "overlay", Options: []string{"upperdir=" + upper, "lowerdir=" + l1}}, errdefs.ErrInvalidArgument},
		{"a user namespace that is not one", ovl, errdefs.ErrInvalidArgument},
	} {
		mm := m
		if strings.HasPrefix(c.name, "a user namespace") {
			fd, _ := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			defer unix.Close(fd)
			mm.UsernsFd = fd
		}
		err := MountAllIDMapped([]Mount{c.m}, merged, mm)
		if !errors.Is(err, c.class) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.class)
		}
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), dir) {
		t.Errorf("mounts left under %s", dir)
	}
}
