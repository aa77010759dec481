package hostinfo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// RecursiveMountAttrs reports whether the kernel has mount_setattr (Linux
// 5.12), which recursive read-only mounts (AT_RECURSIVE) and idmapped
// mounts need.
func RecursiveMountAttrs() bool {
	err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH, &unix.MountAttr{})
	return !errors.Is(err, unix.ENOSYS)
}

// IDMappedMounts checks that pods with user namespaces can run here the
// way shim runs them: exe (a binary linking pkg/libct/nsenter) makes a
// user namespace; an overlayfs mount is made of layers idmapped with it,
// with a writable upper layer (container roots, snapshot.MountAllIDMapped);
// a tmpfs mount (/dev/shm, kubelet's memory volumes) and a bind of
// scratch's own filesystem (pod files) can be idmapped. Everything is made
// in a temporary directory under scratch and removed.
func IDMappedMounts(ctx context.Context, exe, scratch string) error {
	if n := readInt("/proc/sys/user/max_user_namespaces"); n <= 0 {
		return fmt.Errorf("user namespaces are disabled (max_user_namespaces=%d)", n)
	}
	if !RecursiveMountAttrs() {
		return errors.New("the kernel has no mount_setattr (Linux 5.12)")
	}
	const root = 1 << 30
	maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: root, Size: 65536}}
	h, err := libct.HoldNamespaces(ctx, exe, 0, maps, maps)
	if err != nil {
		return fmt.Errorf("making a user namespace: %w", err)
	}
	defer h.Close()
	ns, err := unix.Open(h.Path("user"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ns)
	dir, err := os.MkdirTemp(scratch, ".idmap-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sub := func(n string) string { p := filepath.Join(dir, n); os.MkdirAll(p, 0o755); return p }
	tmpfs, merged := sub("tmpfs"), sub("merged")
	lower, upper, work := sub("lower"), sub("snap/fs"), sub("snap/work")
	if err := os.WriteFile(filepath.Join(lower, "f"), nil, 0o644); err != nil {
		return err
	}
	ovl := snapshot.Mount{Type: "overlay", Source: "overlay", Options: []string{"index=off",
		"workdir=" + work, "upperdir=" + upper, "lowerdir=" + lower + ":" + sub("lower2")}}
	if err := snapshot.MountAllIDMapped([]snapshot.Mount{ovl}, merged, snapshot.IDMap{UsernsFd: ns, UID: root, GID: root}); err != nil {
		return fmt.Errorf("overlayfs of idmapped layers: %w", err)
	}
	var st unix.Stat_t
	err = unix.Stat(filepath.Join(merged, "f"), &st)
	unix.Unmount(merged, unix.MNT_DETACH)
	if err != nil || st.Uid != root {
		return fmt.Errorf("overlayfs of idmapped layers shows a file of uid 0 as uid %d (%v), want %d", st.Uid, err, root)
	}
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=64k"); err != nil {
		return fmt.Errorf("tmpfs: %w", err)
	}
	defer unix.Unmount(tmpfs, unix.MNT_DETACH)
	for _, c := range []struct{ what, path string }{{"tmpfs", tmpfs}, {"the filesystem of " + scratch, dir}} {
		tree, err := unix.OpenTree(unix.AT_FDCWD, c.path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("%s: open_tree: %w", c.what, err)
		}
		err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns)})
		unix.Close(tree)
		if err != nil {
			return fmt.Errorf("%s cannot be idmapped: %w", c.what, err)
		}
	}
	return nil
}
