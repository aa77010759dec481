package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRemoveAllStopsAtBindMount: a bind mount of a directory of the same
// filesystem (same device) below the tree is not entered: RemoveAll fails
// with EBUSY and every file under the mount stays.
func TestRemoveAllStopsAtBindMount(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (bind mounts)")
	}
	base := t.TempDir()
	host := filepath.Join(base, "host")
	tree := filepath.Join(base, "tree")
	os.MkdirAll(filepath.Join(host, "sub"), 0o755)
	os.WriteFile(filepath.Join(host, "sub", "keep"), []byte("host data"), 0o644)
	mnt := filepath.Join(tree, "a", "rootfs", "data")
	os.MkdirAll(mnt, 0o755)
	os.WriteFile(filepath.Join(tree, "a", "other"), []byte("x"), 0o644)
	if err := unix.Mount(host, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	if err := RemoveAll(tree); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("RemoveAll over a bind mount: %v, want EBUSY", err)
	}
	if b, err := os.ReadFile(filepath.Join(host, "sub", "keep")); err != nil || string(b) != "host data" {
		t.Fatalf("host file under the bind mount: %q %v", b, err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if err := RemoveAll(tree); err != nil {
		t.Fatalf("RemoveAll after the unmount: %v", err)
	}
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Fatalf("tree left: %v", err)
	}
}
