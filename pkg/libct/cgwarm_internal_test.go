//go:build !shim_init

package libct

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestAttachWarmerWrites(t *testing.T) {
	procs := filepath.Join(t.TempDir(), "cgroup.procs")
	if err := os.WriteFile(procs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w := newAttachWarmer(procs)

	// One warm-up at a time: while one runs, Warm starts none.
	w.busy.Store(true)
	w.Warm(context.Background())
	w.wait()
	if b, _ := os.ReadFile(procs); len(b) != 0 {
		t.Fatalf("a warm-up started while one ran: wrote %q", b)
	}
	w.busy.Store(false)

	w.Warm(context.Background())
	w.wait()
	if b, _ := os.ReadFile(procs); string(b) != strconv.Itoa(os.Getpid()) {
		t.Errorf("warm-up wrote %q, want this process's pid %d", b, os.Getpid())
	}
	if w.busy.Load() || w.warned.Load() {
		t.Errorf("after a good warm-up: busy %v, warned %v", w.busy.Load(), w.warned.Load())
	}

	// A failed one is reported once, and the next ones still run.
	bad := newAttachWarmer(filepath.Join(t.TempDir(), "missing", "cgroup.procs"))
	bad.Warm(context.Background())
	bad.wait()
	if !bad.warned.Load() || bad.busy.Load() {
		t.Errorf("after a failed warm-up: warned %v, busy %v", bad.warned.Load(), bad.busy.Load())
	}
	bad.Warm(context.Background())
	bad.wait()

	var nilWarmer *AttachWarmer
	nilWarmer.Warm(context.Background()) // no warmer on this host: nothing
}

// TestAttachWarmerHost warms this host's own cgroup: the write succeeds
// and moves nothing.
func TestAttachWarmerHost(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	before, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewAttachWarmer()
	if err != nil {
		t.Fatal(err)
	}
	w.Warm(context.Background())
	w.wait()
	if w.warned.Load() {
		t.Errorf("the warm-up of %s failed", w.procs)
	}
	after, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("the warm-up moved this process:\n%s\nto\n%s", before, after)
	}
}
