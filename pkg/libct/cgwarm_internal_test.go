//go:build !shim_init

package libct

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// fakeWarmer is a warmer whose hierarchy is a temporary directory holding
// this process's cgroup path (as /proc/self/cgroup names it): the file it
// writes is returned.
func fakeWarmer(t *testing.T, version int, cgroupType string) (*AttachWarmer, string) {
	t.Helper()
	own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var key string
	for k := range own {
		key = k
		break
	}
	root := t.TempDir()
	dir := filepath.Join(root, own[key])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	procs := filepath.Join(dir, "cgroup.procs")
	if err := os.WriteFile(procs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if cgroupType != "" {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.type"), []byte(cgroupType+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &AttachWarmer{version: version, dir: root, key: key, pid: []byte(strconv.Itoa(os.Getpid()))}, procs
}

func TestAttachWarmerWrites(t *testing.T) {
	w, procs := fakeWarmer(t, 1, "")

	// One warm-up at a time: while one runs, Warm starts none.
	w.busy.Store(true)
	w.Warm()
	w.wait()
	if b, _ := os.ReadFile(procs); len(b) != 0 {
		t.Fatalf("a warm-up started while one ran: wrote %q", b)
	}
	w.busy.Store(false)

	w.Warm()
	w.wait()
	if b, _ := os.ReadFile(procs); string(b) != strconv.Itoa(os.Getpid()) {
		t.Errorf("warm-up wrote %q, want this process's pid %d", b, os.Getpid())
	}
	if w.busy.Load() || w.failed.Load() {
		t.Errorf("after a good warm-up: busy %v, failed %v", w.busy.Load(), w.failed.Load())
	}

	// A failed one is noted (and logged) once; the next ones still run.
	if err := os.Remove(procs); err != nil {
		t.Fatal(err)
	}
	w.Warm()
	w.wait()
	if !w.failed.Load() || w.busy.Load() {
		t.Errorf("after a failed warm-up: failed %v, busy %v", w.failed.Load(), w.busy.Load())
	}
	if err := os.WriteFile(procs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w.Warm()
	w.wait()
	if b, _ := os.ReadFile(procs); string(b) != strconv.Itoa(os.Getpid()) {
		t.Errorf("the warm-up after a failed one wrote %q", b)
	}

	var none *AttachWarmer
	none.Warm() // no warmer on this host: nothing
}

// TestAttachWarmerThreaded: on v2 a threaded cgroup gets no write (it
// would gather the process's threads).
func TestAttachWarmerThreaded(t *testing.T) {
	w, procs := fakeWarmer(t, 2, "threaded")
	if err := w.warm(); !errdefs.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("warm-up of a threaded cgroup: %v, want not implemented", err)
	}
	if b, _ := os.ReadFile(procs); len(b) != 0 {
		t.Errorf("a threaded cgroup got %q", b)
	}
	w, procs = fakeWarmer(t, 2, "domain")
	if err := w.warm(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(procs); string(b) != strconv.Itoa(os.Getpid()) {
		t.Errorf("a domain cgroup got %q", b)
	}
}

// TestAttachWarmerHost warms this host's own cgroup: the write succeeds
// and moves nothing.
func TestAttachWarmerHost(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	if err := unix.Access("/sys/fs/cgroup", unix.W_OK); err != nil {
		t.Skipf("the cgroupfs is not writable here: %v", err)
	}
	before, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewAttachWarmer() // one warm-up, synchronous
	if err != nil {
		t.Fatal(err)
	}
	w.Warm()
	w.wait()
	if w.failed.Load() {
		t.Error("the warm-up failed")
	}
	after, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("the warm-up moved this process:\n%s\nto\n%s", before, after)
	}
}
