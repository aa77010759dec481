package daemon

import (
	"os"
	"path/filepath"
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
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want 0660 socket", fi.Mode())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("created dir mode %v, want 0700", di.Mode().Perm())
	}
	// A live socket is refused.
	if _, err := ListenUnix(sock, 0o660); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	l.Close()
	// net.UnixListener removes its file on Close; leave a stale file.
	os.WriteFile(sock, nil, 0o600)
	l, err = ListenUnix(sock, 0o660)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()
}

func TestListenUnixRefusesWorldWritableDir(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	if _, err := ListenUnix(filepath.Join(dir, "s.sock"), 0o660); err == nil {
		t.Fatal("socket in a world-writable dir accepted")
	}
}

func TestListenBadAddresses(t *testing.T) {
	for _, addr := range []string{"http://x", "unix://relative", "tcp://127.0.0.1:0", "fd://"} {
		if _, err := Listen(addr, config.TLS{}); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
}
