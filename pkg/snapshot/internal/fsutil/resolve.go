// Package fsutil holds the file-descriptor based filesystem helpers shared by
// the layer applier and the snapshot drivers: scoped path resolution inside a
// root, fd-relative recursive removal, xattr access and durability helpers.
//
// Every helper that takes a path below a root resolves it by file descriptor
// (openat2 with RESOLVE_IN_ROOT, falling back to filepath-securejoin's
// pathrs-lite on kernels without openat2), so a symlink or ".." in image
// content can never lead outside the root.
package fsutil

import (
	"errors"
	"os"
	"strings"
	"sync"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// useOpenat2 is decided once; tests flip it to exercise the fallback.
var (
	openat2Once sync.Once
	useOpenat2  bool
)

func haveOpenat2() bool {
	openat2Once.Do(func() {
		fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT,
		})
		if err == nil {
			unix.Close(fd)
			useOpenat2 = true
		}
	})
	return useOpenat2
}

// SetOpenat2ForTest forces (or forbids) the openat2 path; it returns a
// function restoring the previous setting.
func SetOpenat2ForTest(on bool) (restore func()) {
	haveOpenat2()
	prev := useOpenat2
	useOpenat2 = on
	return func() { useOpenat2 = prev }
}

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC

// OpenDirInRoot opens the directory p (slash separated, relative to rootfd)
// for reading, resolving every component as if rootfd were "/": absolute
// symlinks and ".." are clamped to the root. p "" or "." opens the root
// itself. The caller closes the returned fd.
func OpenDirInRoot(rootfd int, p string) (int, error) {
	p = strings.TrimLeft(p, "/")
	if p == "" || p == "." {
		return unix.Openat(rootfd, ".", dirFlags, 0)
	}
	if !haveOpenat2() {
		return openInRootFallback(rootfd, p)
	}
	how := &unix.OpenHow{
		Flags:   dirFlags,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(rootfd, p, how)
		// EAGAIN: a concurrent rename raced with ".." resolution; retry.
		if err == unix.EAGAIN && i < 16 {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: p, Err: err}
		}
		return fd, nil
	}
}

// MkdirAllInRoot is OpenDirInRoot that first creates missing directories of
// p (mode perm, owned by the caller) the same scoped way. It fails with
// ENOTDIR when a component exists and is not a directory (or a dangling
// symlink).
func MkdirAllInRoot(rootfd int, p string, perm uint32) (int, error) {
	fd, err := OpenDirInRoot(rootfd, p)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	p = strings.Trim(p, "/")
	if !haveOpenat2() {
		return mkdirInRootFallback(rootfd, p, perm)
	}
	// Walk from the root, re-resolving each prefix from rootfd so that
	// symlinks met on the way resolve exactly as a full lookup would.
	parent, err := unix.Openat(rootfd, ".", dirFlags, 0)
	if err != nil {
		return -1, err
	}
	comps := strings.Split(p, "/")
	for i, c := range comps {
		if c == "" || c == "." {
			continue
		}
		prefix := strings.Join(comps[:i+1], "/")
		next, err := OpenDirInRoot(rootfd, prefix)
		if errors.Is(err, unix.ENOENT) && c != ".." {
			if merr := unix.Mkdirat(parent, c, perm); merr != nil && merr != unix.EEXIST {
				unix.Close(parent)
				return -1, &os.PathError{Op: "mkdirat", Path: prefix, Err: merr}
			}
			next, err = OpenDirInRoot(rootfd, prefix)
			if errors.Is(err, unix.ENOENT) {
				// c exists but is a dangling symlink.
				err = &os.PathError{Op: "mkdir", Path: prefix, Err: unix.ENOTDIR}
			}
		}
		unix.Close(parent)
		if err != nil {
			return -1, err
		}
		parent = next
	}
	return parent, nil
}

func rootFile(rootfd int) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(rootfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(d), "root"), nil
}

func openInRootFallback(rootfd int, p string) (int, error) {
	root, err := rootFile(rootfd)
	if err != nil {
		return -1, err
	}
	defer root.Close()
	h, err := pathrs.OpenatInRoot(root, p)
	if err != nil {
		return -1, err
	}
	return reopenDir(h)
}

func mkdirInRootFallback(rootfd int, p string, perm uint32) (int, error) {
	root, err := rootFile(rootfd)
	if err != nil {
		return -1, err
	}
	defer root.Close()
	h, err := pathrs.MkdirAllHandle(root, p, os.FileMode(perm))
	if err != nil {
		return -1, err
	}
	return reopenDir(h)
}

func reopenDir(h *os.File) (int, error) {
	defer h.Close()
	f, err := pathrs.Reopen(h, dirFlags)
	if err != nil {
		return -1, err
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	return fd, err
}
