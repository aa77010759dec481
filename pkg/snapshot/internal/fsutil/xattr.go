package fsutil

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ProcPath names entry base of the directory dirfd through /proc/self/fd,
// for the syscalls that have no *at form (l*xattr). The kernel follows the
// fd magic link to the directory we hold and resolves base there without
// following a final symlink.
func ProcPath(dirfd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + base
}

// Lsetxattr sets attribute name on entry base of dirfd without following a
// final symlink.
func Lsetxattr(dirfd int, base, name string, value []byte) error {
	return unix.Lsetxattr(ProcPath(dirfd, base), name, value, 0)
}

// Xattrs returns every extended attribute of base in dirfd (not following
// a final symlink). Attributes that vanish while being read are skipped.
func Xattrs(dirfd int, base string) (map[string][]byte, error) {
	p := ProcPath(dirfd, base)
	names, err := listXattr(func(b []byte) (int, error) { return unix.Llistxattr(p, b) })
	if err != nil || len(names) == 0 {
		return nil, err
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		v, err := getXattr(func(b []byte) (int, error) { return unix.Lgetxattr(p, n, b) })
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + n, Path: base, Err: err}
		}
		out[n] = v
	}
	return out, nil
}

func listXattr(list func([]byte) (int, error)) ([]string, error) {
	sz, err := list(nil)
	for {
		if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if sz == 0 {
			return nil, nil
		}
		buf := make([]byte, sz)
		sz, err = list(buf)
		if err == unix.ERANGE {
			sz, err = list(nil)
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, n := range bytes.Split(buf[:sz], []byte{0}) {
			if len(n) > 0 {
				names = append(names, string(n))
			}
		}
		return names, nil
	}
}

func getXattr(get func([]byte) (int, error)) ([]byte, error) {
	sz, err := get(nil)
	for {
		if err != nil {
			return nil, err
		}
		buf := make([]byte, sz)
		sz, err = get(buf)
		if err == unix.ERANGE {
			sz, err = get(nil)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:sz], nil
	}
}
