package fsutil

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// InheritDirs gives each directory of upper named in dirs ("." is the
// root) the owner, mode and xattrs of the same directory in the overlay
// stack lowers (top first), the way the merged view would show it had the
// layer not recreated it. A directory that no lower has (or that a
// whiteout or opaque directory hides) keeps what it has. Paths are
// resolved without following symlinks, inside each root.
func InheritDirs(upper string, lowers []string, dirs []string) error {
	ufd, err := unix.Open(upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", upper, err)
	}
	defer unix.Close(ufd)
	lfds := make([]int, 0, len(lowers))
	defer func() {
		for _, fd := range lfds {
			unix.Close(fd)
		}
	}()
	for _, l := range lowers {
		fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", l, err)
		}
		lfds = append(lfds, fd)
	}
	for _, d := range dirs {
		src := -1
		for _, lfd := range lfds {
			found, hidden, fd := lookupDir(lfd, d)
			if found {
				src = fd
				break
			}
			if hidden {
				break
			}
		}
		if src < 0 {
			continue
		}
		err := copyDirAttrs(src, ufd, d)
		unix.Close(src)
		if err != nil {
			return fmt.Errorf("directory %q: %w", d, err)
		}
	}
	return nil
}

func openBeneath(root int, p string, flags uint64) (int, error) {
	return unix.Openat2(root, p, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// lookupDir finds directory p in one lower layer: found (with an O_PATH fd)
// when it is a directory there; hidden when this layer hides it from the
// layers below (a whiteout at p or above, a non-directory at p or above,
// an opaque directory above it).
func lookupDir(root int, p string) (found, hidden bool, fd int) {
	if p != "." {
		// Walk the prefixes: whiteouts and opaque directories above p.
		parts := strings.Split(p, "/")
		for i := 1; i <= len(parts); i++ {
			q := path.Join(parts[:i]...)
			qfd, err := openBeneath(root, q, unix.O_PATH|unix.O_NOFOLLOW)
			if errors.Is(err, unix.ENOENT) {
				return false, false, -1
			}
			if err != nil {
				return false, true, -1
			}
			var st unix.Stat_t
			serr := unix.Fstat(qfd, &st)
			if serr != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
				unix.Close(qfd)
				// A whiteout (0:0 char device) or any non-directory
				// hides everything below it.
				return false, true, -1
			}
			if i < len(parts) && isOpaque(qfd) {
				// Layers below do not show under an opaque directory: p is
				// found in this layer (the walk goes on) or nowhere.
				unix.Close(qfd)
				if pfd, err := openBeneath(root, p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY); err == nil {
					return true, false, pfd
				}
				return false, true, -1
			}
			if i == len(parts) {
				return true, false, qfd
			}
			unix.Close(qfd)
		}
	}
	fd, err := openBeneath(root, ".", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return false, false, -1
	}
	return true, false, fd
}

func isOpaque(fd int) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(ProcPath(fd, ""), "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// copyDirAttrs copies owner, mode and xattrs (but overlay's own) from the
// directory src to the directory p under root.
func copyDirAttrs(src, root int, p string) error {
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return err
	}
	dfd, err := openBeneath(root, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	dpath := ProcPath(dfd, "")
	if err := unix.Fchownat(dfd, "", int(st.Uid), int(st.Gid), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Chmod(dpath, st.Mode&07777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	xattrs, err := Xattrs(src, "")
	if err != nil {
		return nil // none to copy (or not supported): owner and mode suffice
	}
	for n, v := range xattrs {
		if !strings.HasPrefix(n, "trusted.overlay.") {
			unix.Lsetxattr(dpath, n, v, 0)
		}
	}
	return nil
}
