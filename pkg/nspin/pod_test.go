package nspin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// TestSetSysctls: sysctls land in the pinned namespace, not the host's; a
// value the kernel refuses is InvalidArgument.
func TestSetSysctls(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "ipc")
	if err := Pin(context.Background(), IPC, path); err != nil {
		t.Fatal(err)
	}
	defer Unpin(path)
	const file = "/proc/sys/kernel/shm_rmid_forced"
	host, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := "1"
	if strings.TrimSpace(string(host)) == "1" {
		want = "0"
	}
	if err := SetSysctls(IPC, path, map[string]string{"kernel/shm_rmid_forced": want}); err != nil {
		t.Fatal(err)
	}
	var inside []byte
	if err := Do(IPC, path, func() (err error) {
		inside, err = os.ReadFile(file)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(inside)); got != want {
		t.Errorf("inside the pod %s = %q, want %q", file, got, want)
	}
	if after, _ := os.ReadFile(file); string(after) != string(host) {
		t.Errorf("the host's %s changed from %q to %q", file, host, after)
	}
	err = SetSysctls(IPC, path, map[string]string{"kernel/shm_rmid_forced": "not a number"})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("a refused value: %v, want InvalidArgument", err)
	}
	if err := SetSysctls(IPC, path, nil); err != nil {
		t.Errorf("no sysctls: %v", err)
	}
}

// TestMountShm: a tmpfs of the size asked, 1777, nosuid/nodev/noexec.
func TestMountShm(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "shm")
	if err := MountShm(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(path, unix.MNT_DETACH)
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.TMPFS_MAGIC || fs.Blocks*uint64(fs.Bsize) != 1<<20 {
		t.Errorf("type %#x, %d bytes; want tmpfs of 1 MiB", fs.Type, fs.Blocks*uint64(fs.Bsize))
	}
	want := int64(unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC)
	if fs.Flags&want != want {
		t.Errorf("mount flags %#x, want nosuid, nodev and noexec", fs.Flags)
	}
	if st, err := os.Stat(path); err != nil || st.Mode()&(os.ModePerm|os.ModeSticky) != 0o777|os.ModeSticky {
		t.Errorf("mode %v (%v), want 1777", st.Mode(), err)
	}
	if err := MountShm(path, 1<<20); err == nil {
		t.Error("a second MountShm on the same path succeeded")
	}
}
