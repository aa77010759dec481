package fsutil

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// RemoveAllAt removes name (a single path component) in the directory dirfd
// and, if it is a directory, everything below it. Symlinks are removed,
// never followed. It refuses (EBUSY) to descend into a directory on another
// device or another mount (a bind mount of the same filesystem has the
// same device but not the same mount id), so a mount below the tree is
// never emptied. A missing name is not an error.
func RemoveAllAt(dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return err
	}
	return removeAllAt(dirfd, name, st.Dev, mountID(dirfd))
}

// mountID is the id of the mount fd is on; 0 when the kernel cannot tell
// (statx without STATX_MNT_ID, before Linux 5.8).
func mountID(fd int) uint64 {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0
	}
	return stx.Mnt_id
}

func removeAllAt(dirfd int, name string, dev, mnt uint64) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return &os.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	fd, oerr := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if oerr != nil {
		if oerr == unix.ENOENT {
			return nil
		}
		return &os.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	if st.Dev != dev || (mnt != 0 && mountID(fd) != mnt) {
		unix.Close(fd)
		return &os.PathError{Op: "remove", Path: name, Err: fmt.Errorf("mount point: %w", unix.EBUSY)}
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	for {
		names, rerr := d.Readdirnames(1024)
		for _, n := range names {
			if err := removeAllAt(fd, n, dev, mnt); err != nil {
				return err
			}
		}
		if len(names) == 0 || rerr != nil {
			break
		}
		// Entries were removed under the directory stream; rewind so
		// none is skipped.
		if _, err := d.Seek(0, 0); err != nil {
			return err
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return &os.PathError{Op: "rmdir", Path: name, Err: err}
	}
	return nil
}

// RemoveAll removes path and everything below it, like os.RemoveAll but
// never crossing into another mount and never following symlinks.
func RemoveAll(path string) error {
	dir, base := splitPath(path)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return RemoveAllAt(fd, base)
}

func splitPath(p string) (dir, base string) {
	for len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	i := len(p) - 1
	for i >= 0 && p[i] != '/' {
		i--
	}
	switch {
	case i < 0:
		return ".", p
	case i == 0:
		return "/", p[1:]
	}
	return p[:i], p[i+1:]
}
