package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// IDMap says how MountAllIDMapped maps a snapshot for a container in a
// user namespace.
type IDMap struct {
	// UsernsFd is an open user namespace: the read-only layers are
	// idmapped with its mappings.
	UsernsFd int
	// UID and GID are the host ids the namespace's root maps to: the
	// owner of the writable layer's root directory.
	UID, GID uint32
}

// MountAllIDMapped is MountAll for the root filesystem (or an image
// volume) of a container in a user namespace. Overlayfs cannot itself be
// idmapped, so it is made from idmapped layers: each read-only layer is a
// detached idmapped copy of its directory (open_tree + mount_setattr
// MOUNT_ATTR_IDMAP), handed to overlayfs by file descriptor (fsconfig
// FSCONFIG_SET_FD, Linux 6.13), so a file the image has as uid 0 is the
// container's root's. The writable layer is not idmapped (overlayfs works
// in it with the mounter's credentials): its root is chowned to the host
// ids of the namespace's root, and what the container writes is stored
// with its host ids, like the rest of what it owns on the host. A bind
// mount (a single layer) is an idmapped bind.
func MountAllIDMapped(mounts []Mount, target string, m IDMap) error {
	abs, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	if t, err := unix.IoctlRetInt(m.UsernsFd, unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWUSER {
		return fmt.Errorf("idmapped mount on %s: fd %d is not a user namespace: %w", abs, m.UsernsFd, errdefs.ErrInvalidArgument)
	}
	for i, mt := range mounts {
		if err := mountOneIDMapped(mt, abs, m); err != nil {
			for j := 0; j < i; j++ {
				_ = unix.Unmount(abs, unix.MNT_DETACH)
			}
			return fmt.Errorf("idmapped mount %s %s on %s: %w", mt.Type, mt.Source, abs, err)
		}
	}
	return nil
}

func mountOneIDMapped(mt Mount, target string, m IDMap) error {
	p := parseOptions(mt.Options)
	if mt.Type == "bind" {
		p.flags |= unix.MS_BIND
	}
	if p.flags&unix.MS_BIND != 0 {
		tree, err := idmappedTree(mt.Source, p.flags&unix.MS_REC != 0, p.flags&unix.MS_RDONLY != 0, m.UsernsFd)
		if err != nil {
			return err
		}
		defer unix.Close(tree)
		return moveTo(tree, target)
	}
	if mt.Type != "overlay" {
		return fmt.Errorf("mount type %q: only overlay and bind mounts can be idmapped: %w", mt.Type, errdefs.ErrNotImplemented)
	}
	return mountOverlayIDMapped(p, target, m)
}

func moveTo(tree int, target string) error {
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", target, err)
	}
	return nil
}

// idmappedTree is a detached, idmapped copy of the mount at src.
func idmappedTree(src string, rec, ro bool, usernsFd int) (int, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if rec {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFd)}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		unix.Close(fd)
		class := errdefs.ErrInvalidArgument
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			class = errdefs.ErrNotImplemented
		}
		return -1, fmt.Errorf("idmap %s: %w: %w", src, err, class)
	}
	return fd, nil
}

func mountOverlayIDMapped(p parsedMount, target string, m IDMap) (retErr error) {
	var lowers []string
	var upper, work string
	var rest []string
	for _, o := range p.data {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			lowers = strings.Split(v, ":")
		case "upperdir":
			upper = v
		case "workdir":
			work = v
		default:
			rest = append(rest, o)
		}
	}
	if len(lowers) == 0 || (upper == "") != (work == "") {
		return fmt.Errorf("overlay options %v: want lowerdir, and upperdir with workdir: %w", p.data, errdefs.ErrInvalidArgument)
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	fs, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	fds = append(fds, fs)
	set := func(key string, fd int) error {
		if err := unix.FsconfigSetFd(fs, key, fd); err != nil {
			class := errdefs.ErrInvalidArgument
			if errors.Is(err, unix.EINVAL) {
				class = errdefs.ErrNotImplemented
			}
			return fmt.Errorf("overlay %s by fd (Linux 6.13): %s: %w: %w", key, fsMessages(fs), err, class)
		}
		return nil
	}
	for _, l := range lowers {
		fd, err := idmappedTree(l, false, true, m.UsernsFd)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
		if err := set("lowerdir+", fd); err != nil {
			return err
		}
	}
	if upper != "" {
		if err := os.Chown(upper, int(m.UID), int(m.GID)); err != nil {
			return fmt.Errorf("chown the writable layer to the user namespace's root: %w", err)
		}
		for _, d := range []struct{ key, path string }{{"upperdir", upper}, {"workdir", work}} {
			fd, err := unix.Open(d.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("overlay %s: %w", d.key, err)
			}
			fds = append(fds, fd)
			if err := set(d.key, fd); err != nil {
				return err
			}
		}
	}
	for _, o := range rest {
		k, v, hasValue := strings.Cut(o, "=")
		if hasValue {
			err = unix.FsconfigSetString(fs, k, v)
		} else {
			err = unix.FsconfigSetFlag(fs, k)
		}
		if err != nil {
			return fmt.Errorf("overlay option %s: %s: %w: %w", o, fsMessages(fs), err, errdefs.ErrInvalidArgument)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return fmt.Errorf("create overlay: %s: %w: %w", fsMessages(fs), err, errdefs.ErrInvalidArgument)
	}
	var attrs int
	if p.flags&unix.MS_RDONLY != 0 {
		attrs |= unix.MOUNT_ATTR_RDONLY
	}
	mnt, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	fds = append(fds, mnt)
	// overlayfs falls back to read-only when it cannot work in the upper
	// layer: a writable root must be writable.
	var st unix.Statfs_t
	if upper != "" && unix.Fstatfs(mnt, &st) == nil && st.Flags&unix.ST_RDONLY != 0 {
		return fmt.Errorf("overlay made read-only by the kernel: %s: %w", fsMessages(fs), errdefs.ErrNotImplemented)
	}
	return moveTo(mnt, target)
}

// fsMessages reads what the kernel logged on a filesystem context.
func fsMessages(fs int) string {
	var out []string
	buf := make([]byte, 1024)
	for i := 0; i < 16; i++ {
		n, err := unix.Read(fs, buf)
		if n <= 0 || err != nil {
			break
		}
		out = append(out, strings.TrimSpace(string(buf[:n])))
	}
	if len(out) == 0 {
		return "no kernel message"
	}
	return strings.Join(out, "; ")
}
