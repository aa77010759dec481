package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

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
// directory is created 0700 if missing and must not be writable by
// others; a stale socket is replaced, a live one refused.
func ListenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("unix socket path %q must be absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().Perm()&0o002 != 0 && st.Uid != 0 {
		return nil, fmt.Errorf("socket directory %s is world-writable and not owned by root: %w", dir, errdefs.ErrPermissionDenied)
	}
	if fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return nil, fmt.Errorf("socket directory %s is world-writable: %w", dir, errdefs.ErrPermissionDenied)
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another shim is serving on %s: %w", path, errdefs.ErrAlreadyExists)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	// Create the socket with its final mode: no window where it is wider.
	old := syscall.Umask(0o777 &^ int(mode.Perm()))
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, mode.Perm()); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
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
