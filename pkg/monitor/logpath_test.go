package monitor

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// TestMonitorLogNoSymlink: the monitor runs as root and the log path comes
// from a pod's config; a symlink (or a FIFO) planted at the log path must
// neither be followed nor block the monitor, at create and at reopen.
func TestMonitorLogNoSymlink(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	logDir, elsewhere := t.TempDir(), t.TempDir()

	// A dangling symlink: following it would create the target.
	created := filepath.Join(elsewhere, "created-through-symlink")
	if err := os.Symlink(created, filepath.Join(logDir, "a.log")); err != nil {
		t.Fatal(err)
	}
	b := p.bundle(t, "sh", "-c", "echo written")
	_, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "l1", Bundle: b, LogPath: filepath.Join(logDir, "a.log")})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("create with a symlinked log: %v, want invalid argument", err)
	}
	if _, err := os.Lstat(created); err == nil {
		t.Errorf("the monitor created %s through a symlink", created)
	}

	// A symlink to an existing file: it must not be appended to.
	precious := filepath.Join(elsewhere, "precious")
	if err := os.WriteFile(precious, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(precious, filepath.Join(logDir, "b.log")); err != nil {
		t.Fatal(err)
	}
	_, err = p.c.Call(ctx, &Request{Op: OpCreate, ID: "l2", Bundle: b, LogPath: filepath.Join(logDir, "b.log")})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("create with a log symlinked to a file: %v, want invalid argument", err)
	}

	// A FIFO is not a log file (and opening it must not hang the monitor).
	if err := syscall.Mkfifo(filepath.Join(logDir, "c.log"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = p.c.Call(ctx, &Request{Op: OpCreate, ID: "l3", Bundle: b, LogPath: filepath.Join(logDir, "c.log")})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("create with a FIFO as log: %v, want invalid argument", err)
	}

	// Reopen: the rotated log replaced by a symlink.
	long := p.bundle(t, "sleep", "1000")
	logPath := filepath.Join(logDir, "d.log")
	p.run(t, "l4", long, logPath)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	created2 := filepath.Join(elsewhere, "created-at-reopen")
	if err := os.Symlink(created2, logPath); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpReopenLog, ID: "l4"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("reopen onto a symlink: %v, want invalid argument", err)
	}
	if _, err := os.Lstat(created2); err == nil {
		t.Errorf("the monitor created %s through a symlink at reopen", created2)
	}
	if got, _ := os.ReadFile(precious); string(got) != "keep\n" {
		t.Errorf("the symlink target was written: %q", got)
	}
	// A regular file again: reopen works.
	os.Remove(logPath)
	if _, err := p.c.Call(ctx, &Request{Op: OpReopenLog, ID: "l4"}); err != nil {
		t.Errorf("reopen: %v", err)
	}
	if fi, err := os.Lstat(logPath); err != nil || !fi.Mode().IsRegular() || !strings.HasSuffix(fi.Name(), ".log") {
		t.Errorf("log after reopen: %v %v", fi, err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: "l4", Force: true}); err != nil {
		t.Fatal(err)
	}
}
