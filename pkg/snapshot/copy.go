package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
)

// Copy copies the tree src to dst (which must not exist), preserving file
// types (regular, directories, symlinks, devices, fifos, sockets), owners,
// modes including setuid/setgid/sticky, access and modification times,
// xattrs and hard links. File data is reflinked (FICLONE) where the
// filesystem can, else copied in the kernel with copy_file_range. Symlinks
// are never followed and everything is reached through directory fds.
func Copy(ctx context.Context, src, dst string) error {
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: src, Err: err}
	}
	defer unix.Close(sfd)
	if err := unix.Mkdir(dst, 0o700); err != nil {
		return &os.PathError{Op: "mkdir", Path: dst, Err: err}
	}
	dfd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dst, Err: err}
	}
	defer unix.Close(dfd)
	c := &copier{ctx: ctx, dstRoot: dfd, links: make(map[inode]string), buf: make([]byte, 128<<10)}
	if err := c.dir(sfd, dfd, ""); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return err
	}
	if err := c.meta(sfd, ".", dfd, ".", &st, dfd); err != nil {
		return err
	}
	return nil
}

type inode struct{ dev, ino uint64 }

type copier struct {
	ctx     context.Context
	dstRoot int
	links   map[inode]string // source inode -> first copy, relative to dstRoot
	buf     []byte
}

// dir copies the entries of directory sfd into directory dfd (rel is
// dfd's path below the destination root).
func (c *copier) dir(sfd, dfd int, rel string) error {
	names, err := readDirNames(sfd)
	if err != nil {
		return fmt.Errorf("read %s: %w", rel, err)
	}
	for _, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.entry(sfd, dfd, name, path.Join(rel, name)); err != nil {
			return err
		}
	}
	return nil
}

func (c *copier) entry(sfd, dfd int, name, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		k := inode{st.Dev, st.Ino}
		if first, ok := c.links[k]; ok {
			if err := unix.Linkat(c.dstRoot, first, dfd, name, 0); err != nil {
				return &os.PathError{Op: "link", Path: rel, Err: err}
			}
			return nil
		}
		c.links[k] = rel
	}
	switch typ {
	case unix.S_IFDIR:
		return c.subdir(sfd, dfd, name, rel, &st)
	case unix.S_IFREG:
		return c.file(sfd, dfd, name, rel, &st)
	case unix.S_IFLNK:
		target, err := readlinkat(sfd, name)
		if err != nil {
			return &os.PathError{Op: "readlink", Path: rel, Err: err}
		}
		if err := unix.Symlinkat(target, dfd, name); err != nil {
			return &os.PathError{Op: "symlink", Path: rel, Err: err}
		}
	default: // devices, fifos, sockets
		if err := unix.Mknodat(dfd, name, typ|0o600, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: rel, Err: err}
		}
	}
	return c.meta(sfd, name, dfd, name, &st, -1)
}

func (c *copier) subdir(sfd, dfd int, name, rel string, st *unix.Stat_t) error {
	if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
		return &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	cs, err := unix.Openat(sfd, name, flags, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: rel, Err: err}
	}
	defer unix.Close(cs)
	cd, err := unix.Openat(dfd, name, flags, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: rel, Err: err}
	}
	defer unix.Close(cd)
	if err := c.dir(cs, cd, rel); err != nil {
		return err
	}
	// After the contents, so their creation does not touch the times.
	return c.meta(sfd, name, dfd, name, st, cd)
}

func (c *copier) file(sfd, dfd int, name, rel string, st *unix.Stat_t) error {
	in, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: rel, Err: err}
	}
	defer unix.Close(in)
	out, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: rel, Err: err}
	}
	defer unix.Close(out)
	if err := c.data(in, out, st.Size); err != nil {
		return fmt.Errorf("copy %s: %w", rel, err)
	}
	return c.meta(sfd, name, dfd, name, st, out)
}

// data copies size bytes: reflink, else copy_file_range, else read/write.
func (c *copier) data(in, out int, size int64) error {
	if size == 0 {
		return nil
	}
	if err := unix.IoctlFileClone(out, in); err == nil {
		return nil
	}
	var done int64
	for done < size {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n, err := unix.CopyFileRange(in, nil, out, nil, int(min(size-done, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return c.readWrite(in, out)
			}
			return err
		}
		if n == 0 {
			break // file shrank
		}
		done += int64(n)
	}
	return nil
}

// readWrite copies the rest of in to out; both offsets are where
// copy_file_range left them.
func (c *copier) readWrite(in, out int) error {
	for {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Read(in, c.buf)
		if n > 0 {
			if _, werr := writeFull(out, c.buf[:n]); werr != nil {
				return werr
			}
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

func writeFull(fd int, b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, io.ErrShortWrite
		}
		total += n
		b = b[n:]
	}
	return total, nil
}

// meta copies owner, mode, xattrs and times of sname in sfd to dname in
// dfd. fd is an open fd of the destination entry when there is one (files,
// directories), -1 otherwise.
func (c *copier) meta(sfd int, sname string, dfd int, dname string, st *unix.Stat_t, fd int) error {
	typ := st.Mode & unix.S_IFMT
	// chown before chmod (it clears setuid/setgid) and before xattrs (it
	// clears security.capability).
	var err error
	if fd >= 0 {
		err = unix.Fchown(fd, int(st.Uid), int(st.Gid))
	} else {
		err = unix.Fchownat(dfd, dname, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return &os.PathError{Op: "lchown", Path: dname, Err: err}
	}
	if typ != unix.S_IFLNK {
		if fd >= 0 {
			err = unix.Fchmod(fd, st.Mode&0o7777)
		} else {
			// dname was just created by us with mknodat: not a symlink.
			err = unix.Fchmodat(dfd, dname, st.Mode&0o7777, 0)
		}
		if err != nil {
			return &os.PathError{Op: "chmod", Path: dname, Err: err}
		}
	}
	xattrs, err := fsutil.Xattrs(sfd, sname)
	if err != nil {
		return err
	}
	for n, v := range xattrs {
		if err := fsutil.Lsetxattr(dfd, dname, n, v); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES) {
				log.G(c.ctx).WithField("xattr", n).WithField("path", dname).WithError(err).Debug("native copy: host refused xattr, skipping")
				continue
			}
			return &os.PathError{Op: "setxattr " + n, Path: dname, Err: err}
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dfd, dname, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: dname, Err: err}
	}
	return nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, b)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(b[:n]), nil
		}
	}
}
