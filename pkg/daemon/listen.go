package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// Listen opens the CRI listener for addr: unix://PATH, tcp://HOST:PORT
// (mutual TLS with tlsCfg) or fd:// / fd://N (socket activation).
func Listen(addr string, tlsCfg config.TLS) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "unix://"):
		return ListenUnix(strings.TrimPrefix(addr, "unix://"), 0o660)
	case strings.HasPrefix(addr, "tcp://"):
		return listenTLS(strings.TrimPrefix(addr, "tcp://"), tlsCfg)
	case strings.HasPrefix(addr, "fd://"):
		return listenFD(strings.TrimPrefix(addr, "fd://"))
	}
	return nil, fmt.Errorf("listen address %q: want unix://, tcp:// or fd://: %w", addr, errdefs.ErrInvalidArgument)
}

// ListenUnix listens on a unix socket at path with the given mode. Its
// directory is created 0700 if missing; it must belong to root (or to this
// process's user) and be writable by nobody else. A stale socket is
// replaced, a live one refused, and anything else at path is left alone
// and refused.
//
// The socket is bound in a fresh private directory, given its mode there
// and renamed into place: it never exists with a wider mode, no chmod goes
// through a path someone else could swap for a symlink, and the process
// umask (shared by every goroutine) is never changed.
func ListenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("unix socket path %q must be absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	path = filepath.Clean(path)
	dir, base := filepath.Dir(path), filepath.Base(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	dirf, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer dirf.Close()
	if err := checkSocketDir(dir, dirf); err != nil {
		return nil, err
	}
	if err := checkStale(dirf, base, path); err != nil {
		return nil, err
	}
	priv, err := os.MkdirTemp(dir, ".sock-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(priv)
	privf, err := os.OpenFile(priv, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer privf.Close()
	// Bound through the directory's fd: the name stays short whatever
	// the length of dir (sun_path holds 107 bytes).
	l, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: fmt.Sprintf("/proc/self/fd/%d/s", privf.Fd())})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		unix.Unlinkat(int(privf.Fd()), "s", 0)
		return nil, err
	}
	// Nobody else can write in priv: "s" is the socket just bound.
	if err := unix.Fchmodat(int(privf.Fd()), "s", uint32(mode.Perm()), 0); err != nil {
		return fail(fmt.Errorf("chmod socket %s: %w", path, err))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(int(privf.Fd()), "s", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail(err)
	}
	if err := unix.Renameat(int(privf.Fd()), "s", int(dirf.Fd()), base); err != nil {
		return fail(fmt.Errorf("moving the socket to %s: %w", path, err))
	}
	return &unixListener{UnixListener: l, addr: &net.UnixAddr{Net: "unix", Name: path}, dev: st.Dev, ino: st.Ino}, nil
}

// checkSocketDir refuses a socket directory others could write in or
// that belongs to another user.
func checkSocketDir(dir string, f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s belongs to uid %d, not root: %w", dir, st.Uid, errdefs.ErrPermissionDenied)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("socket directory %s is writable by group or others (mode %04o): %w", dir, st.Mode&0o7777, errdefs.ErrPermissionDenied)
	}
	return nil
}

// checkStale accepts a missing path or a socket nobody serves on (rename
// replaces it); a live socket or any other file is refused.
func checkStale(dirf *os.File, base, path string) error {
	var st unix.Stat_t
	err := unix.Fstatat(int(dirf.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket; not replacing it: %w", path, errdefs.ErrAlreadyExists)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another shim is serving on %s: %w", path, errdefs.ErrAlreadyExists)
	}
	return nil
}

// unixListener reports the socket's real path and, on Close, removes the
// socket if it is still the one it created.
type unixListener struct {
	*net.UnixListener
	addr     *net.UnixAddr
	dev, ino uint64
	once     sync.Once
}

func (l *unixListener) Addr() net.Addr { return l.addr }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		var st unix.Stat_t
		if unix.Lstat(l.addr.Name, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
			os.Remove(l.addr.Name)
		}
	})
	return err
}

func listenTLS(hostport string, c config.TLS) (net.Listener, error) {
	if c.Cert == "" || c.Key == "" || c.CA == "" {
		return nil, fmt.Errorf("tcp listener needs tls.cert, tls.key and tls.ca (mutual TLS): %w", errdefs.ErrInvalidArgument)
	}
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pem, err := os.ReadFile(c.CA)
	if err != nil {
		return nil, fmt.Errorf("tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls ca %s: no certificates: %w", c.CA, errdefs.ErrInvalidArgument)
	}
	l, err := net.Listen("tcp", hostport)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(l, &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	}), nil
}

// listenFD takes a socket passed by the service manager (LISTEN_FDS).
func listenFD(which string) (net.Listener, error) {
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err != nil || pid != os.Getpid() {
		return nil, fmt.Errorf("fd:// listener: LISTEN_PID is not this process: %w", errdefs.ErrFailedPrecondition)
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("fd:// listener: no LISTEN_FDS: %w", errdefs.ErrFailedPrecondition)
	}
	fd := 3
	if which != "" {
		if fd, err = strconv.Atoi(which); err != nil {
			names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
			fd = -1
			for i, name := range names {
				if name == which {
					fd = 3 + i
				}
			}
			if fd < 0 {
				return nil, fmt.Errorf("fd://%s: no such passed socket: %w", which, errdefs.ErrNotFound)
			}
		}
	}
	if fd < 3 || fd >= 3+n {
		return nil, fmt.Errorf("fd://%s: only fds 3 to %d were passed: %w", which, 2+n, errdefs.ErrInvalidArgument)
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("fd %d: %w", fd, err)
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	return l, nil
}
