package monitor

import (
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxSunPath is the usable length of a unix socket path.
const maxSunPath = 100

// shortPath returns a path to p that fits in sun_path: p itself, or
// /proc/self/fd/N/<base> through an O_PATH descriptor of its directory,
// which the caller closes after the bind or connect.
func shortPath(p string) (string, func(), error) {
	if len(p) < maxSunPath {
		return p, func() {}, nil
	}
	fd, err := unix.Open(filepath.Dir(p), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, &os.PathError{Op: "open", Path: filepath.Dir(p), Err: err}
	}
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(p), func() { unix.Close(fd) }, nil
}

func listenUnix(p string) (*net.UnixListener, error) {
	sp, done, err := shortPath(p)
	if err != nil {
		return nil, err
	}
	defer done()
	os.Remove(p)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	return l, os.Chmod(p, 0o600)
}

func dialUnix(p string) (*net.UnixConn, error) {
	sp, done, err := shortPath(p)
	if err != nil {
		return nil, err
	}
	defer done()
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: sp, Net: "unix"})
}
