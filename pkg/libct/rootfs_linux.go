package libct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// openDest creates (if needed) and opens the mount destination dest inside
// root, resolving every component inside the root by fd. A destination
// that is itself a symlink is refused: the image must not choose where a
// mount lands.
func openDest(root *os.File, dest string, dir bool) (*os.File, error) {
	dest = filepath.Clean("/" + dest)
	if dest == "/" {
		return nil, fmt.Errorf("mount destination is the root: %w", errdefs.ErrInvalidArgument)
	}
	parentPath, base := filepath.Split(dest)
	parent, err := pathrs.MkdirAllHandle(root, parentPath, 0o755)
	if err != nil {
		return nil, fmt.Errorf("mount destination %s: parent: %w: %w", dest, err, errdefs.ErrInvalidArgument)
	}
	defer parent.Close()
	pfd := int(parent.Fd())
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return nil, fmt.Errorf("mount destination %s is a symlink in the rootfs: %w", dest, errdefs.ErrInvalidArgument)
		}
	case errors.Is(err, unix.ENOENT):
		if dir {
			err = unix.Mkdirat(pfd, base, 0o755)
		} else {
			var fd int
			fd, err = unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create mount destination %s: %w", dest, err)
		}
	default:
		return nil, fmt.Errorf("mount destination %s: %w", dest, err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open mount destination %s: %w", dest, err)
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		unix.Close(fd)
		return nil, fmt.Errorf("mount destination %s is a symlink in the rootfs: %w", dest, errdefs.ErrInvalidArgument)
	}
	return os.NewFile(uintptr(fd), dest), nil
}

// reopenDest opens dest again after something was mounted on it, so later
// operations hit the new mount rather than the covered directory.
func reopenDest(root *os.File, dest string) (*os.File, error) {
	f, err := pathrs.OpenatInRoot(root, dest)
	if err != nil {
		return nil, fmt.Errorf("reopen mount %s: %w", dest, err)
	}
	return f, nil
}

func setupRootfs(cfg *initConfig) error {
	spec := cfg.Spec
	rootfs := cfg.Rootfs
	old := unix.Umask(0)
	defer unix.Umask(old)

	var rootProp uintptr
	if spec.Linux != nil && spec.Linux.RootfsPropagation != "" {
		p, ok := propagationDefs[spec.Linux.RootfsPropagation]
		if !ok {
			return fmt.Errorf("rootfsPropagation %q: %w", spec.Linux.RootfsPropagation, errdefs.ErrInvalidArgument)
		}
		rootProp = p
	}
	flag := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if rootProp != 0 {
		flag = rootProp
	}
	if err := unix.Mount("", "/", "", flag, ""); err != nil {
		return fmt.Errorf("set / propagation: %w", err)
	}
	if err := parentMountPrivate(rootfs); err != nil {
		return err
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if cfg.UserNS && errors.Is(err, unix.EACCES) {
			return fmt.Errorf("bind rootfs %s: the container's root (in a user namespace) cannot reach it: "+
				"its parent directories must be searchable by others (0711): %w: %w", rootfs, err, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("bind rootfs: %w", err)
	}
	root, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs: %w", err)
	}
	defer root.Close()

	devIsBind := false
	devRO := false
	for i, m := range spec.Mounts {
		dest := filepath.Clean("/" + m.Destination)
		pm, err := parseSpecMount(m)
		if err != nil {
			return err
		}
		if dest == "/dev" {
			devIsBind = pm.isBind
			if !pm.isBind && pm.flags&unix.MS_RDONLY != 0 {
				// Devices are created after the mounts; make it
				// read-only at the end.
				devRO = true
				pm.flags &^= unix.MS_RDONLY
			}
		}
		if err := mountOne(root, cfg, i, m, dest, pm); err != nil {
			return err
		}
	}
	if !devIsBind {
		if err := setupDev(root, spec, cfg.UserNS); err != nil {
			return err
		}
	}
	if hasCreateHooks(spec.Hooks) {
		if err := createHooks(cfg); err != nil {
			return err
		}
	}
	if cfg.NoPivot {
		err = moveRoot(rootfs)
	} else {
		err = pivotRoot(rootfs)
	}
	if err != nil {
		return err
	}
	if rootProp != 0 {
		if err := unix.Mount("", "/", "", rootProp, ""); err != nil {
			return fmt.Errorf("apply rootfsPropagation: %w", err)
		}
	}
	if devRO {
		if err := remountRO("/dev"); err != nil {
			return err
		}
	}
	if cwd := cfg.Process.Cwd; cwd != "" {
		// We are inside the root now: a plain MkdirAll cannot escape.
		if err := os.MkdirAll(cwd, 0o755); err != nil {
			return fmt.Errorf("create cwd %q: %w", cwd, err)
		}
	}
	return nil
}

// parentMountPrivate makes the mount holding rootfs private if it is
// shared, which pivot_root requires.
func parentMountPrivate(rootfs string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.ParentsFilter(rootfs))
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	var best *mountinfo.Info
	for _, m := range mounts {
		if best == nil || len(m.Mountpoint) > len(best.Mountpoint) {
			best = m
		}
	}
	if best == nil || !strings.Contains(best.Optional, "shared:") {
		return nil
	}
	if err := unix.Mount("", best.Mountpoint, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", best.Mountpoint, err)
	}
	return nil
}

func mountOne(root *os.File, cfg *initConfig, i int, m specs.Mount, dest string, pm parsedMount) error {
	switch m.Type {
	case "cgroup", "cgroup2":
		return mountCgroup(root, cfg, m, dest, pm)
	}
	if f := cfg.preparedMount(i); f != nil {
		return movePrepared(root, f, dest, pm)
	}
	source, isDir, err := mountSource(cfg.Bundle, m, pm)
	if err != nil {
		return err
	}
	target, err := openDest(root, dest, isDir)
	if err != nil {
		return err
	}
	defer target.Close()
	tpath := procFd(int(target.Fd()))
	if pm.isBind {
		if err := unix.Mount(source, tpath, "", pm.flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
			return fmt.Errorf("bind mount %s on %s: %w", source, dest, err)
		}
	} else {
		flags := pm.flags
		data := mountLabelData(m.Type, pm.data, cfg.Spec.Linux.MountLabel)
		if err := unix.Mount(source, tpath, m.Type, flags, data); err != nil {
			if m.Type == "sysfs" && errors.Is(err, unix.EPERM) && cfg.UserNS {
				// In a user namespace without its own netns sysfs
				// cannot be mounted; bind the host's, read-only.
				if err := unix.Mount("/sys", tpath, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
					return fmt.Errorf("bind /sys on %s: %w", dest, err)
				}
				pm.isBind = true
				pm.flags |= unix.MS_RDONLY | unix.MS_BIND
			} else {
				return fmt.Errorf("mount %s (%s) on %s: %w: %w", m.Source, m.Type, dest, err, mountErrClass(err))
			}
		}
	}
	if m.Type == "proc" {
		if err := checkFSType(root, dest, unix.PROC_SUPER_MAGIC); err != nil {
			return err
		}
	}
	return applyMountAttrs(root, dest, pm)
}

// mountSource is m's source (a bind's relative to the bundle) and whether
// the mount is of a directory (a bind's source, which must exist).
func mountSource(bundle string, m specs.Mount, pm parsedMount) (string, bool, error) {
	if !pm.isBind {
		return m.Source, true, nil
	}
	source := m.Source
	if !filepath.IsAbs(source) {
		source = filepath.Join(bundle, source)
	}
	var st unix.Stat_t
	if err := unix.Stat(source, &st); err != nil {
		return "", false, fmt.Errorf("bind mount source %s: %w: %w", source, err, errdefs.ErrNotFound)
	}
	return source, st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// movePrepared attaches a bind mount the parent prepared as a detached
// tree (see prepareMounts) at dest, then applies its flags.
func movePrepared(root *os.File, f *os.File, dest string, pm parsedMount) error {
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("bind mount on %s: %w", dest, err)
	}
	target, err := openDest(root, dest, st.Mode&unix.S_IFMT == unix.S_IFDIR)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.MoveMount(int(f.Fd()), "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach bind mount on %s: %w: %w", dest, err, mountErrClass(err))
	}
	return applyMountAttrs(root, dest, pm)
}

// mountErrClass is the class of a failed mount: by its errno, and
// otherwise a mount request the kernel refused (a bad type, option or
// source).
func mountErrClass(err error) error {
	return errdefs.OSClass(err, errdefs.ErrInvalidArgument)
}

func checkFSType(root *os.File, dest string, magic int64) error {
	f, err := reopenDest(root, dest)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != magic {
		return fmt.Errorf("%s is not the filesystem just mounted: %w", dest, errdefs.ErrPermissionDenied)
	}
	return nil
}

// applyMountAttrs applies the remount flags of a bind mount, propagation
// and recursive attributes to the mount now on dest.
func applyMountAttrs(root *os.File, dest string, pm parsedMount) error {
	extra := pm.flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT)
	needRemount := pm.isBind && extra != 0
	if !needRemount && len(pm.propFlags) == 0 && pm.recSet == 0 && pm.recClr == 0 {
		return nil
	}
	f, err := reopenDest(root, dest)
	if err != nil {
		return err
	}
	defer f.Close()
	p := procFd(int(f.Fd()))
	if needRemount {
		if err := bindRemount(p, extra); err != nil {
			return fmt.Errorf("remount %s: %w", dest, err)
		}
	}
	for _, pf := range pm.propFlags {
		if err := unix.Mount("", p, "", pf, ""); err != nil {
			return fmt.Errorf("set propagation of %s: %w", dest, err)
		}
	}
	if pm.recSet != 0 || pm.recClr != 0 {
		attr := &unix.MountAttr{Attr_set: pm.recSet, Attr_clr: pm.recClr}
		if err := unix.MountSetattr(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
			return fmt.Errorf("mount_setattr %s: %w: %w", dest, err, errdefs.ErrNotImplemented)
		}
	}
	return nil
}

// bindRemount remounts a bind mount with flags, keeping the flags locked by
// the kernel (nosuid, nodev, noexec, atime flags of the source mount).
func bindRemount(path string, flags uintptr) error {
	err := unix.Mount("", path, "", unix.MS_BIND|unix.MS_REMOUNT|flags, "")
	if err == nil || !errors.Is(err, unix.EPERM) {
		return err
	}
	var st unix.Statfs_t
	if e := unix.Statfs(path, &st); e != nil {
		return err
	}
	locked := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_RDONLY)
	return unix.Mount("", path, "", unix.MS_BIND|unix.MS_REMOUNT|flags|locked, "")
}

func remountRO(path string) error {
	if err := bindRemount(path, unix.MS_RDONLY); err != nil {
		// Not a bind mount (e.g. tmpfs): remount the superblock.
		if err2 := unix.Mount("", path, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err2 != nil {
			return fmt.Errorf("remount %s read-only: %w", path, err)
		}
	}
	return nil
}

func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open new root: %w", err)
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return fmt.Errorf("chdir to new root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return fmt.Errorf("chdir to old root: %w", err)
	}
	// Make the old root a slave so the detach below cannot propagate
	// to the host.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount old root: %w", err)
	}
	return unix.Chdir("/")
}

func moveRoot(rootfs string) error {
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("chdir to rootfs: %w", err)
	}
	if err := unix.Mount(rootfs, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move rootfs to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// finalizeRootfs runs after pivot_root: masked and read-only paths, and a
// read-only root.
func finalizeRootfs(cfg *initConfig) error {
	spec := cfg.Spec
	if spec.Linux != nil {
		for _, p := range spec.Linux.ReadonlyPaths {
			if err := readonlyPath(p); err != nil {
				return err
			}
		}
		for _, p := range spec.Linux.MaskedPaths {
			if err := maskPath(p); err != nil {
				return err
			}
		}
	}
	if spec.Root != nil && spec.Root.Readonly {
		if err := remountRO("/"); err != nil {
			return err
		}
	}
	return nil
}

func readonlyPath(p string) error {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("readonly path %s: %w", p, err)
	}
	defer unix.Close(fd)
	if err := unix.Mount(procFd(fd), p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind readonly path %s: %w", p, err)
	}
	if err := bindRemount(p, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC); err != nil {
		return fmt.Errorf("remount %s read-only: %w", p, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	_ = unix.MountSetattr(unix.AT_FDCWD, p, unix.AT_RECURSIVE|unix.AT_SYMLINK_NOFOLLOW, attr)
	return nil
}

// maskPath hides p: a directory under an empty read-only tmpfs, a file
// under /dev/null, which must be the real 1:3 character device.
func maskPath(p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("masked path %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
		return nil
	}
	null, err := unix.Open("/dev/null", unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mask %s: open /dev/null: %w", p, err)
	}
	defer unix.Close(null)
	var ns unix.Stat_t
	if err := unix.Fstat(null, &ns); err != nil || ns.Mode&unix.S_IFMT != unix.S_IFCHR || ns.Rdev != unix.Mkdev(1, 3) {
		return fmt.Errorf("mask %s: /dev/null is not the 1:3 character device: %w", p, errdefs.ErrPermissionDenied)
	}
	if err := unix.Mount(procFd(null), p, "", unix.MS_BIND, ""); err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

// createHooks asks the parent to run the prestart and createRuntime hooks
// (runtime namespace), then runs createContainer hooks here: in the
// container's namespaces, before pivot_root, so hook paths are host paths.
func createHooks(cfg *initConfig) error {
	if err := writeFrame(cfg.conn, initMsg{Type: "hooks"}); err != nil {
		return fmt.Errorf("request hooks: %w", err)
	}
	var m initMsg
	if _, err := readFrame(cfg.conn, &m); err != nil || m.Type != "hooks-done" {
		return fmt.Errorf("runtime hooks did not complete: %w", errdefs.ErrAborted)
	}
	return RunHooks(context.Background(), cfg.Spec.Hooks.CreateContainer, cfg.hookState(StatusCreating), false)
}
