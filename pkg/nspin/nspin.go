// Package nspin pins pod namespaces (net, ipc, uts) without a pause process:
// a namespace is created by a throw-away locked OS thread and kept alive by
// bind-mounting its nsfs file onto a regular file, the way `ip netns add`,
// CRI-O's pinns and containerd do it.
//
// Files and state (defaults from ARCHITECTURE.md):
//
//	/run/shim/netns/             PrepareDir: 0700, a bind mount of itself, shared
//	/run/shim/netns/<pod>-net    Pin: an empty 0444 file with the nsfs bind mount on top
//	/run/shim/netns/<pod>-user   Adopt: the same for a namespace made elsewhere
//
// Nothing else is kept: a pin is exactly one mount, Unpin removes the mount
// and the file, and a reboot (tmpfs state dir) removes both.
//
// Threads: Go schedules goroutines over OS threads and namespaces belong to
// threads, so every function here that changes a thread's namespace runs on
// a fresh goroutine locked to its thread, switches back before unlocking,
// and, if switching back fails, exits still locked so the runtime destroys
// the thread instead of reusing it. No Go thread stays in a pod namespace.
//
// Mount propagation: callers should call PrepareDir once on the directory
// holding the pins before the first Pin (the daemon does it at start). It
// makes the directory a shared mount (bind-mounting it onto itself first when
// it is not a mount point, as iproute2 does for /run/netns), with these
// consequences:
//   - a process that later runs in a mount namespace copied from the
//     daemon's (a monitor, an infra process, nsenter) sees pins made after
//     its namespace was created, because mounts under a shared mount
//     propagate to its peers;
//   - Unpin propagates too, so a copy of a pin in such a namespace does not
//     keep a network namespace (and its veth) alive after the pod is gone.
//
// Container mount namespaces must not receive the directory with shared
// propagation (pkg/libct makes the container rootfs rslave/rprivate, and the
// state dir is never mounted into containers).
package nspin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Namespace kinds Pin accepts; Adopt accepts User too.
const (
	Net  = "net"
	IPC  = "ipc"
	UTS  = "uts"
	User = "user"
)

func cloneFlag(kind string) (int, error) {
	switch kind {
	case Net:
		return unix.CLONE_NEWNET, nil
	case IPC:
		return unix.CLONE_NEWIPC, nil
	case UTS:
		return unix.CLONE_NEWUTS, nil
	}
	return 0, fmt.Errorf("namespace kind %q (want net, ipc or uts): %w", kind, errdefs.ErrInvalidArgument)
}

// adoptFlag is cloneFlag plus user namespaces, which only Adopt pins (a
// new one needs id mappings, written from outside by another process).
func adoptFlag(kind string) (int, error) {
	if kind == User {
		return unix.CLONE_NEWUSER, nil
	}
	return cloneFlag(kind)
}

// PrepareDir creates dir (0700) and makes it a shared mount, bind-mounting
// it onto itself first when it is not yet a mount point. It is idempotent;
// call it once at daemon start on the directory that will hold the pins.
func PrepareDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("nspin: empty directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("nspin: create %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("nspin: bind %s onto itself: %w", dir, err)
		}
		err = unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("nspin: make %s shared: %w", dir, err)
	}
	return nil
}

// Pin creates a new namespace of kind (Net, IPC or UTS) and bind-mounts it
// at path. The file is created 0444, its directory 0700 if missing. Pinning
// over an existing pin fails with ErrAlreadyExists; a leftover unmounted
// file (a crash between create and mount) is reused.
func Pin(ctx context.Context, kind, path string) (retErr error) {
	flag, err := cloneFlag(kind)
	if err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("nspin: empty path: %w", errdefs.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("nspin: create dir for %s: %w", path, err)
	}
	if isNsfs(path) {
		return fmt.Errorf("nspin: %s is already pinned: %w", path, errdefs.ErrAlreadyExists)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("nspin: create %s: %w", path, err)
	}
	f.Close()
	defer func() {
		if retErr != nil {
			Unpin(path)
		}
	}()
	err = onThread(func() (bool, error) {
		orig, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return true, err
		}
		defer unix.Close(orig)
		if err := unix.Unshare(flag); err != nil {
			return true, fmt.Errorf("unshare %s: %w", kind, err)
		}
		merr := unix.Mount("/proc/thread-self/ns/"+kind, path, "", unix.MS_BIND, "")
		if err := unix.Setns(orig, flag); err != nil {
			return false, fmt.Errorf("restore %s namespace: %w", kind, err)
		}
		if merr != nil {
			return true, fmt.Errorf("bind mount: %w", merr)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("nspin: pin %s namespace at %s: %w", kind, path, err)
	}
	return nil
}

// Adopt pins an existing namespace of kind (Net, IPC, UTS or User): src
// is a namespace file such as /proc/<pid>/ns/<kind> of a process holding
// it (a user namespace with its mappings and the namespaces it owns are
// made together by a helper process, see libct.HoldNamespaces). path
// follows Pin's rules; a src of another kind is ErrFailedPrecondition.
func Adopt(ctx context.Context, kind, src, path string) (retErr error) {
	flag, err := adoptFlag(kind)
	if err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("nspin: empty path: %w", errdefs.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fd, err := openNS(src, flag)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("nspin: create dir for %s: %w", path, err)
	}
	if isNsfs(path) {
		return fmt.Errorf("nspin: %s is already pinned: %w", path, errdefs.ErrAlreadyExists)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("nspin: create %s: %w", path, err)
	}
	f.Close()
	defer func() {
		if retErr != nil {
			Unpin(path)
		}
	}()
	// The fd, not src: the namespace checked is the one pinned.
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("nspin: pin %s namespace at %s: %w", kind, path, err)
	}
	return nil
}

// Unpin unmounts the pin at path (lazily, MNT_DETACH) and removes the file.
// A missing path or a file that is not mounted is not an error, so Unpin is
// idempotent. The namespace itself goes away when nothing else uses it.
func Unpin(path string) error {
	if path == "" {
		return fmt.Errorf("nspin: empty path: %w", errdefs.ErrInvalidArgument)
	}
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nspin: unpin %s: %w", path, err)
	}
	if st.IsDir() {
		return fmt.Errorf("nspin: unpin %s: is a directory: %w", path, errdefs.ErrInvalidArgument)
	}
	// Loop: a pin may be stacked (two mounts on one file) after a racing crash.
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("nspin: unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nspin: remove %s: %w", path, err)
	}
	return nil
}

// Do runs fn on a locked OS thread inside the namespace of kind (Net, IPC
// or UTS) pinned at path and switches the thread back afterwards; it is
// the one way shim runs code in a pod namespace. fn runs on another
// goroutine than the caller's: it must not call t.Fatal or
// runtime.Goexit. Sockets fn creates stay in the pod's network namespace
// after Do returns, and /proc/sys files it opens show the namespace it
// runs in. A missing or unpinned path, or a namespace of another kind,
// fails with ErrFailedPrecondition.
func Do(kind, path string, fn func() error) error {
	flag, err := cloneFlag(kind)
	if err != nil {
		return err
	}
	target, err := openNS(path, flag)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	var fnErr error
	err = onThread(func() (bool, error) {
		orig, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return true, err
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, flag); err != nil {
			return true, fmt.Errorf("setns %s: %w", path, err)
		}
		fnErr = fn()
		if err := unix.Setns(orig, flag); err != nil {
			return false, fmt.Errorf("restore %s namespace: %w", kind, err)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("nspin: %w", err)
	}
	return fnErr
}

// SetHostname sets the hostname of the UTS namespace pinned at path.
func SetHostname(path, hostname string) error {
	if hostname == "" || len(hostname) > 64 {
		return fmt.Errorf("nspin: hostname %q: want 1 to 64 bytes: %w", hostname, errdefs.ErrInvalidArgument)
	}
	return Do(UTS, path, func() error {
		return unix.Sethostname([]byte(hostname))
	})
}

// Hostname returns the hostname of the UTS namespace pinned at path.
func Hostname(path string) (string, error) {
	var name string
	err := Do(UTS, path, func() error {
		var err error
		name, err = os.Hostname()
		return err
	})
	return name, err
}

// Check reports whether path holds a pinned namespace of kind: nil, or
// ErrFailedPrecondition when the path is missing, not a namespace or one of
// another kind.
func Check(kind, path string) error {
	flag, err := adoptFlag(kind)
	if err != nil {
		return err
	}
	fd, err := openNS(path, flag)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// openNS opens the namespace file at path and checks its kind.
func openNS(path string, flag int) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("nspin: open namespace %s: %w: %w", path, err, errdefs.ErrFailedPrecondition)
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil || t != flag {
		unix.Close(fd)
		if err == nil {
			err = fmt.Errorf("namespace type %#x, want %#x", t, flag)
		}
		return -1, fmt.Errorf("nspin: %s is not a pinned namespace: %w: %w", path, err, errdefs.ErrFailedPrecondition)
	}
	return fd, nil
}

// onThread runs fn on a new goroutine locked to its OS thread. fn reports
// whether the thread is clean (back in the namespaces it started in); a
// thread that is not is never unlocked, so the runtime terminates it when
// the goroutine exits.
func onThread(fn func() (clean bool, err error)) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		clean, err := fn()
		if clean {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func isNsfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
