package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestListenUnix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	sock := filepath.Join(dir, "shim.sock")
	l, err := ListenUnix(sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr().String() != sock {
		t.Errorf("listener address %s, want %s", l.Addr(), sock)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want 0660 socket", fi.Mode())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("created dir mode %v, want 0700", di.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("socket dir holds %v, want the socket only", ents)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	// A live socket is refused.
	if _, err := ListenUnix(sock, 0o660); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	l.Close()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
	// A stale socket (nobody serves on it) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: sock})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err = ListenUnix(sock, 0o600)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	if fi, _ := os.Lstat(sock); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("replaced socket: %v", fi)
	}
	l.Close()
}

// TestListenUnixLongDir: the socket is bound through a directory fd, so
// a directory longer than sun_path allows still works.
func TestListenUnixLongDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100), strings.Repeat("e", 100))
	l, err := ListenUnix(filepath.Join(dir, "shim.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, err := os.Lstat(filepath.Join(dir, "shim.sock")); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v %v", fi, err)
	}
}

func TestListenUnixRefusesWritableDir(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o1777, 0o770, 0o720, 0o702} {
		dir := t.TempDir()
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if l, err := ListenUnix(filepath.Join(dir, "s.sock"), 0o660); err == nil {
			l.Close()
			t.Errorf("socket in a dir with mode %04o accepted", mode)
		} else if !errdefs.Is(err, errdefs.ErrPermissionDenied) {
			t.Errorf("mode %04o: %v, want permission denied", mode, err)
		}
	}
	if os.Getuid() == 0 {
		dir := t.TempDir()
		os.Chown(dir, 4242, 4242)
		if l, err := ListenUnix(filepath.Join(dir, "s.sock"), 0o660); err == nil {
			l.Close()
			t.Errorf("socket in a dir of another user accepted")
		}
	}
}

// TestListenUnixKeepsOtherFiles: only a socket is ever replaced; a file,
// a directory or a symlink at the path stays and the listen fails.
func TestListenUnixKeepsOtherFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, []byte("keep"), 0o600)
	cases := map[string]func(p string) error{
		"file":    func(p string) error { return os.WriteFile(p, []byte("keep"), 0o600) },
		"dir":     func(p string) error { return os.Mkdir(p, 0o700) },
		"symlink": func(p string) error { return os.Symlink(target, p) },
		"dangling symlink": func(p string) error {
			return os.Symlink(filepath.Join(dir, "nothing"), p)
		},
	}
	for name, mk := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".sock")
		if err := mk(p); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Lstat(p)
		if l, err := ListenUnix(p, 0o660); err == nil {
			l.Close()
			t.Errorf("%s at the socket path replaced", name)
			continue
		}
		after, err := os.Lstat(p)
		if err != nil || after.Mode() != before.Mode() || !os.SameFile(before, after) {
			t.Errorf("%s at the socket path changed: %v %v", name, after, err)
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("symlink target changed: %q", b)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("symlink target mode changed: %v", fi.Mode())
	}
}

// TestListenUnixKeepsUmask: files other goroutines create while sockets
// are set up get the process umask, never one changed for a socket.
func TestListenUnixKeepsUmask(t *testing.T) {
	dir := t.TempDir()
	files := t.TempDir()
	probe := filepath.Join(files, "probe")
	f, err := os.OpenFile(probe, os.O_CREATE|os.O_WRONLY, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(probe)
	want := fi.Mode().Perm()
	stop := make(chan struct{})
	bad := make(chan os.FileMode, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(files, strconv.Itoa(i%64))
			os.Remove(p)
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o666)
			if err != nil {
				continue
			}
			fi, _ := f.Stat()
			f.Close()
			if fi.Mode().Perm() != want {
				select {
				case bad <- fi.Mode().Perm():
				default:
				}
			}
		}
	}()
	for i := 0; i < 2000; i++ {
		l, err := ListenUnix(filepath.Join(dir, "s.sock"), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	close(stop)
	wg.Wait()
	select {
	case m := <-bad:
		t.Fatalf("a file created meanwhile got mode %04o, want %04o: the umask changed", m, want)
	default:
	}
}

func TestListenBadAddresses(t *testing.T) {
	for _, addr := range []string{"http://x", "unix://relative", "tcp://127.0.0.1:0", "fd://"} {
		if _, err := Listen(addr, config.TLS{}); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
}
