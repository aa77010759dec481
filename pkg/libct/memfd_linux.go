package libct

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/shim-cri/shim/pkg/log"
	"golang.org/x/sys/unix"
)

const (
	mfdExec    = 0x10   // MFD_EXEC, Linux 6.3
	fSealExec  = 0x0020 // F_SEAL_EXEC, Linux 6.3
	sealsBasic = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
)

var (
	exeOnce    sync.Once
	exeFile    *os.File
	exeErr     error
	initBinary = "/proc/self/exe"
)

// SetInitBinary makes path the binary container inits and exec'd
// processes run (it must link pkg/libct/nsenter and call Init for its
// "init" command: cmd/shim-init); the default is this process's own
// binary. Call it before the first Create, Run or Exec.
func SetInitBinary(path string) { initBinary = path }

// sealedExe returns the init binary (SetInitBinary) opened through a
// read-only overlay, or a sealed memfd copy of it, made once per process:
// the container init is executed from it so nothing in a container can
// ever reach (and overwrite) the shim binary on the host (runc
// CVE-2019-5736). The fd is close-on-exec; exec it through
// /proc/self/fd/N, which the kernel resolves before closing it.
func sealedExe() (*os.File, error) {
	exeOnce.Do(func() { exeFile, exeErr = makeSealedExe(initBinary) })
	return exeFile, exeErr
}

func makeSealedExe(path string) (*os.File, error) {
	if f, err := overlayExe(path); err == nil {
		return f, nil
	}
	f, err := memfdExe(path)
	if err != nil && path != "/proc/self/exe" {
		// This binary has the init too (slower to start).
		log.L.WithError(err).Warnf("container inits run this binary: init binary %s", path)
		return makeSealedExe("/proc/self/exe")
	}
	return f, err
}

// overlayExe opens path (a binary) through a private, read-only overlayfs
// mount of its directory that is never attached to any mount table (new
// mount API): the kernel refuses every write through it (EROFS), so the
// binary cannot be changed through the init's /proc/<pid>/exe, and no copy
// of the binary is made (runc 1.2 does the same).
func overlayExe(path string) (*os.File, error) {
	exe, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	dir, name := filepath.Split(exe)
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fsfd)
	// overlayfs wants two lower layers when there is no upper: the
	// binary's directory over an empty, detached tmpfs.
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirfd)
	empty, err := emptyMount()
	if err != nil {
		return nil, err
	}
	defer unix.Close(empty)
	if err := unix.FsconfigSetFd(fsfd, "lowerdir+", dirfd); err != nil {
		return nil, err
	}
	if err := unix.FsconfigSetFd(fsfd, "lowerdir+", empty); err != nil {
		return nil, err
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, err
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID)
	if err != nil {
		return nil, err
	}
	defer unix.Close(mfd)
	fd, err := unix.Openat(mfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "shim-exe")
	// It must be the same binary as the one named.
	var a, b unix.Stat_t
	if unix.Fstat(fd, &a) != nil || unix.Stat(path, &b) != nil || a.Size != b.Size {
		f.Close()
		return nil, fmt.Errorf("overlay exe does not match %s", path)
	}
	return f, nil
}

// emptyMount returns a detached, empty, read-only tmpfs mount.
func emptyMount() (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "size", "4k"); err != nil {
		return -1, err
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, err
	}
	return unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
}

func memfdExe(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("shim-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|mfdExec)
	if err == unix.EINVAL {
		fd, err = unix.MemfdCreate("shim-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	dst := os.NewFile(uintptr(fd), "shim-init")
	st, err := src.Stat()
	if err != nil {
		dst.Close()
		return nil, err
	}
	if err := unix.Ftruncate(fd, st.Size()); err != nil {
		dst.Close()
		return nil, fmt.Errorf("memfd truncate: %w", err)
	}
	for off := int64(0); off < st.Size(); {
		n, err := unix.Sendfile(fd, int(src.Fd()), nil, int(st.Size()-off))
		if err != nil {
			dst.Close()
			return nil, fmt.Errorf("copy %s: %w", path, err)
		}
		if n == 0 {
			break
		}
		off += int64(n)
	}
	if err := unix.Fchmod(fd, 0o555); err != nil {
		dst.Close()
		return nil, fmt.Errorf("memfd chmod: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, sealsBasic|fSealExec); err != nil {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, sealsBasic); err != nil {
			dst.Close()
			return nil, fmt.Errorf("memfd seal: %w", err)
		}
	}
	return dst, nil
}
