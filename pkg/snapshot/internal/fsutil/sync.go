package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// DirSyncs counts SyncDir calls: tests check with it which operations
// flush directories.
var DirSyncs atomic.Int64

// SyncDir fsyncs the directory at path, making its entries (creates,
// renames, removals) durable.
func SyncDir(path string) error {
	DirSyncs.Add(1)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}

// SyncFS flushes the whole filesystem holding path (syncfs(2)): the cheap
// way to make a freshly unpacked or copied tree durable without an fsync per
// file.
func SyncFS(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: path, Err: err}
	}
	return nil
}

// syncWorkers is how many fsyncs SyncEntries runs at once: concurrent
// fsyncs share the journal commits of filesystems that group them.
const syncWorkers = 8

// SyncEntries fsyncs each entry of names (slash separated, relative to
// root, resolved inside it) that is a regular file or a directory: its
// data, its inode and, for a directory, its entries. A name that is gone
// (removed again by a later entry of its layer) is skipped, as its
// directory's fsync covers the removal. ctx is checked between entries.
func SyncEntries(ctx context.Context, root string, names []string) error {
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rootfd)
	work := make(chan string)
	errs := make(chan error, syncWorkers)
	for range syncWorkers {
		go func() {
			var first error
			for name := range work {
				if err := syncEntry(rootfd, name); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	var cancelled error
	for _, name := range names {
		if cancelled = ctx.Err(); cancelled != nil {
			break
		}
		work <- name
	}
	close(work)
	first := cancelled
	for range syncWorkers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func syncEntry(rootfd int, name string) error {
	dir, base := splitPath(name)
	if base == "" || base == "." {
		return unix.Fsync(rootfd)
	}
	pfd, err := OpenDirInRoot(rootfd, dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: name, Err: err}
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		// ApplyResult.Flush lists none: a layer with one is flushed
		// with its filesystem.
		return fmt.Errorf("fsync %s: mode %o, not a file or directory: %w", name, st.Mode, errdefs.ErrInternal)
	}
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: name, Err: err}
	}
	return nil
}
