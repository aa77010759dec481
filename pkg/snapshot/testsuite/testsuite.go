// Package testsuite is the conformance suite every snapshot driver runs:
//
//	func TestOverlay(t *testing.T) {
//		testsuite.Run(t, func(t *testing.T, root string, db *bbolt.DB) snapshot.Snapshotter { ... })
//	}
//
// It relies on the layout the drivers share: snapshot directories are
// <root>/snapshots/<id>. Tests that mount or write owned files need root
// and skip without it.
package testsuite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
	tt "github.com/shim-cri/shim/pkg/snapshot/internal/tartest"
)

// NewFunc opens the driver under test in root with metadata in db. It may
// be called more than once for one root (reopen after Close).
type NewFunc func(t *testing.T, root string, db *bbolt.DB) snapshot.Snapshotter

// Run runs the suite against the driver newSnapshotter opens.
func Run(t *testing.T, newSnapshotter NewFunc) {
	for _, tc := range []struct {
		name string
		root bool
		fn   func(*env)
	}{
		{"PrepareCommitView", false, testPrepareCommitView},
		{"ErrorClasses", false, testErrorClasses},
		{"Labels", false, testLabels},
		{"ParentChain", false, testParentChain},
		{"RemoveWithChildren", false, testRemoveWithChildren},
		{"RemoveDeletesDirectory", false, testRemoveDeletesDirectory},
		{"Usage", false, testUsage},
		{"Reopen", false, testReopen},
		{"CleanupOrphans", false, testCleanupOrphans},
		{"OrphanAtNextID", false, testOrphanAtNextID},
		{"Concurrent", false, testConcurrent},
		{"CommitWithParent", false, testCommitWithParent},
		{"Closed", false, testClosed},
		{"MountEmpty", true, testMountEmpty},
		{"MountLayers", true, testMountLayers},
		{"LayerMetadata", true, testLayerMetadata},
		{"Chain128", true, testChain128},
		{"SyncEntries", true, testSyncEntries},
		{"PrepareWithoutSync", true, testPrepareWithoutSync},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Getuid() != 0 {
				t.Skip("needs root")
			}
			tc.fn(setup(t, newSnapshotter))
		})
	}
}

type env struct {
	*testing.T
	ctx  context.Context
	root string
	db   *bbolt.DB
	sn   snapshot.Snapshotter
	caps snapshot.Capabilities
	open NewFunc
}

func setup(t *testing.T, open NewFunc) *env {
	root := t.TempDir()
	db, err := bbolt.Open(filepath.Join(root, "meta.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sn := open(t, root, db)
	t.Cleanup(func() { sn.Close() })
	return &env{T: t, ctx: context.Background(), root: root, db: db, sn: sn, caps: sn.Capabilities(), open: open}
}

func (e *env) ok(err error) {
	e.Helper()
	if err != nil {
		e.Fatal(err)
	}
}

func (e *env) prepare(key, parent string, opts ...snapshot.Opt) []snapshot.Mount {
	e.Helper()
	m, err := e.sn.Prepare(e.ctx, key, parent, opts...)
	if err != nil {
		e.Fatalf("Prepare(%q, %q): %v", key, parent, err)
	}
	if len(m) == 0 {
		e.Fatalf("Prepare(%q, %q) returned no mounts", key, parent)
	}
	return m
}

func (e *env) view(key, parent string) []snapshot.Mount {
	e.Helper()
	m, err := e.sn.View(e.ctx, key, parent)
	if err != nil {
		e.Fatalf("View(%q, %q): %v", key, parent, err)
	}
	return m
}

func (e *env) commit(name, key string, opts ...snapshot.Opt) {
	e.Helper()
	if err := e.sn.Commit(e.ctx, name, key, opts...); err != nil {
		e.Fatalf("Commit(%q, %q): %v", name, key, err)
	}
}

func (e *env) stat(key string) snapshot.Info {
	e.Helper()
	info, err := e.sn.Stat(e.ctx, key)
	if err != nil {
		e.Fatalf("Stat(%q): %v", key, err)
	}
	return info
}

func (e *env) wantClass(what string, err, class error) {
	e.Helper()
	if !errors.Is(err, class) {
		e.Errorf("%s: error %v, want class %v", what, err, class)
	}
}

// writable is the directory holding an active snapshot's own data: the
// bind source, or the overlay upperdir.
func (e *env) writable(mounts []snapshot.Mount) string {
	e.Helper()
	for _, m := range mounts {
		if m.Type == "bind" {
			return m.Source
		}
		for _, o := range m.Options {
			if d, ok := strings.CutPrefix(o, "upperdir="); ok {
				return d
			}
		}
	}
	e.Fatalf("no writable directory in %+v", mounts)
	return ""
}

func (e *env) writeFile(dir, name, data string) {
	e.Helper()
	p := filepath.Join(dir, name)
	e.ok(os.MkdirAll(filepath.Dir(p), 0o755))
	e.ok(os.WriteFile(p, []byte(data), 0o644))
}

// snapshotDirs lists <root>/snapshots, without the driver marker.
func (e *env) snapshotDirs() []string {
	e.Helper()
	ents, err := os.ReadDir(filepath.Join(e.root, "snapshots"))
	e.ok(err)
	var out []string
	for _, de := range ents {
		if !strings.HasPrefix(de.Name(), ".") {
			out = append(out, de.Name())
		}
	}
	sort.Strings(out)
	return out
}

func (e *env) idDir(key string) string {
	return filepath.Join(e.root, "snapshots", e.stat(key).ID)
}

// layer makes committed snapshot name on parent from entries, the way the
// image store unpacks: into a parentless active snapshot rebased at Commit
// on diff-layer drivers, into an active child of parent otherwise.
func (e *env) layer(name, parent string, entries ...tt.Entry) {
	e.Helper()
	key := "extract " + name
	p := parent
	if e.caps.DiffLayers {
		p = ""
	}
	dir := e.writable(e.prepare(key, p))
	if _, err := snapshot.Apply(e.ctx, dir, bytes.NewReader(tt.Tar(entries...)), e.caps.Whiteouts); err != nil {
		e.Fatalf("Apply layer %s: %v", name, err)
	}
	var opts []snapshot.Opt
	if parent != "" {
		opts = append(opts, snapshot.WithParent(parent))
	}
	e.commit(name, key, opts...)
}

// mount mounts mounts on a new directory, unmounted at the end of the test.
func (e *env) mount(mounts []snapshot.Mount) string {
	e.Helper()
	target := e.TempDir()
	if err := snapshot.MountAll(mounts, target); err != nil {
		e.Fatalf("MountAll(%+v): %v", mounts, err)
	}
	e.Cleanup(func() {
		if err := snapshot.UnmountAll(target); err != nil {
			e.Errorf("UnmountAll(%s): %v", target, err)
		}
	})
	return target
}

func (e *env) unmount(target string) {
	e.Helper()
	e.ok(snapshot.UnmountAll(target))
	var st, pst unix.Stat_t
	e.ok(unix.Stat(target, &st))
	e.ok(unix.Stat(filepath.Dir(target), &pst))
	if st.Dev != pst.Dev {
		e.Fatalf("%s still mounted after UnmountAll", target)
	}
}

func (e *env) readFile(p string) string {
	e.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		e.Fatal(err)
	}
	return string(b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func testPrepareCommitView(e *env) {
	e.prepare("a", "")
	info := e.stat("a")
	if info.Kind != snapshot.KindActive || info.Parent != "" || info.Key != "a" || info.ID == "" || info.Created.IsZero() {
		e.Errorf("Stat(a) = %+v", info)
	}
	if _, err := e.sn.Mounts(e.ctx, "a"); err != nil {
		e.Errorf("Mounts(a): %v", err)
	}
	e.commit("A", "a")
	if _, err := e.sn.Stat(e.ctx, "a"); !errdefs.Is(err, errdefs.ErrNotFound) {
		e.Errorf("Stat of committed active key: %v, want not found", err)
	}
	c := e.stat("A")
	if c.Kind != snapshot.KindCommitted || c.ID != info.ID {
		e.Errorf("Stat(A) = %+v, want committed with id %s", c, info.ID)
	}
	vm := e.view("v", "A")
	v := e.stat("v")
	if v.Kind != snapshot.KindView || v.Parent != "A" {
		e.Errorf("Stat(v) = %+v", v)
	}
	m, err := e.sn.Mounts(e.ctx, "v")
	if err != nil || fmt.Sprint(m) != fmt.Sprint(vm) {
		e.Errorf("Mounts(v) = %+v, %v; View returned %+v", m, err, vm)
	}
	for _, mnt := range vm {
		if !contains(mnt.Options, "ro") && !hasLowerOnly(mnt) {
			e.Errorf("view mount %+v is not read-only", mnt)
		}
	}
	e.prepare("b", "A")
	if b := e.stat("b"); b.Parent != "A" || b.Kind != snapshot.KindActive {
		e.Errorf("Stat(b) = %+v", b)
	}
	if len(e.snapshotDirs()) != 3 {
		e.Errorf("snapshot directories %v, want 3 (A, v, b)", e.snapshotDirs())
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// hasLowerOnly: an overlay with lowerdirs and no upperdir is read-only.
func hasLowerOnly(m snapshot.Mount) bool {
	lower, upper := false, false
	for _, o := range m.Options {
		lower = lower || strings.HasPrefix(o, "lowerdir=")
		upper = upper || strings.HasPrefix(o, "upperdir=")
	}
	return m.Type == "overlay" && lower && !upper
}

func testErrorClasses(e *env) {
	e.prepare("active", "")
	e.prepare("tmp", "")
	e.commit("committed", "tmp")
	e.view("view", "committed")
	e.prepare("child", "committed")
	before := e.snapshotDirs()

	rebaseMissing := errdefs.ErrNotFound
	if !e.caps.DiffLayers {
		rebaseMissing = errdefs.ErrInvalidArgument
	}
	for _, tc := range []struct {
		what  string
		err   error
		class error
	}{
		{"Prepare empty key", first(e.sn.Prepare(e.ctx, "", "")), errdefs.ErrInvalidArgument},
		{"Prepare key with NUL", first(e.sn.Prepare(e.ctx, "a\x00b", "")), errdefs.ErrInvalidArgument},
		{"Prepare huge key", first(e.sn.Prepare(e.ctx, strings.Repeat("k", 5000), "")), errdefs.ErrInvalidArgument},
		{"Prepare with WithParent", first(e.sn.Prepare(e.ctx, "x", "", snapshot.WithParent("committed"))), errdefs.ErrInvalidArgument},
		{"Prepare existing key", first(e.sn.Prepare(e.ctx, "active", "")), errdefs.ErrAlreadyExists},
		{"Prepare existing committed name", first(e.sn.Prepare(e.ctx, "committed", "")), errdefs.ErrAlreadyExists},
		{"Prepare missing parent", first(e.sn.Prepare(e.ctx, "x", "missing")), errdefs.ErrNotFound},
		{"Prepare on active parent", first(e.sn.Prepare(e.ctx, "x", "active")), errdefs.ErrFailedPrecondition},
		{"Prepare on view parent", first(e.sn.Prepare(e.ctx, "x", "view")), errdefs.ErrFailedPrecondition},
		{"View missing parent", first(e.sn.View(e.ctx, "x", "missing")), errdefs.ErrNotFound},
		{"View of active", first(e.sn.View(e.ctx, "x", "active")), errdefs.ErrFailedPrecondition},
		{"View existing key", first(e.sn.View(e.ctx, "view", "committed")), errdefs.ErrAlreadyExists},
		{"Mounts missing", first(e.sn.Mounts(e.ctx, "missing")), errdefs.ErrNotFound},
		{"Mounts committed", first(e.sn.Mounts(e.ctx, "committed")), errdefs.ErrFailedPrecondition},
		{"Commit missing", e.sn.Commit(e.ctx, "x", "missing"), errdefs.ErrNotFound},
		{"Commit view", e.sn.Commit(e.ctx, "x", "view"), errdefs.ErrFailedPrecondition},
		{"Commit committed", e.sn.Commit(e.ctx, "x", "committed"), errdefs.ErrFailedPrecondition},
		{"Commit onto existing name", e.sn.Commit(e.ctx, "committed", "active"), errdefs.ErrAlreadyExists},
		{"Commit empty name", e.sn.Commit(e.ctx, "", "active"), errdefs.ErrInvalidArgument},
		{"Commit onto missing parent", e.sn.Commit(e.ctx, "x", "active", snapshot.WithParent("missing")), rebaseMissing},
		{"Remove missing", e.sn.Remove(e.ctx, "missing"), errdefs.ErrNotFound},
		{"Remove with children", e.sn.Remove(e.ctx, "committed"), errdefs.ErrFailedPrecondition},
		{"Stat missing", second(e.sn.Stat(e.ctx, "missing")), errdefs.ErrNotFound},
		{"Usage missing", second(e.sn.Usage(e.ctx, "missing")), errdefs.ErrNotFound},
	} {
		e.wantClass(tc.what, tc.err, tc.class)
	}
	if e.caps.DiffLayers {
		e.wantClass("Commit onto active parent", e.sn.Commit(e.ctx, "x", "active", snapshot.WithParent("child")), errdefs.ErrFailedPrecondition)
	}
	// Failed calls leave nothing behind and change nothing.
	if after := e.snapshotDirs(); fmt.Sprint(after) != fmt.Sprint(before) {
		e.Errorf("failed calls changed the snapshot directories: %v -> %v", before, after)
	}
	if e.stat("active").Kind != snapshot.KindActive {
		e.Error("failed Commit changed the active snapshot")
	}
	if _, err := e.sn.Stat(e.ctx, "x"); !errdefs.Is(err, errdefs.ErrNotFound) {
		e.Errorf("a failed call created x: %v", err)
	}
}

func first[T any](_ T, err error) error  { return err }
func second[T any](_ T, err error) error { return err }

func testLabels(e *env) {
	l := map[string]string{"containerd.io/gc.root": "x", "k": "v"}
	e.prepare("a", "", snapshot.WithLabels(l))
	if got := e.stat("a").Labels; fmt.Sprint(got) != fmt.Sprint(l) {
		e.Errorf("labels %v, want %v", got, l)
	}
	e.commit("A", "a")
	if got := e.stat("A").Labels; fmt.Sprint(got) != fmt.Sprint(l) {
		e.Errorf("Commit without labels: %v, want the active's %v", got, l)
	}
	e.prepare("b", "")
	nl := map[string]string{"new": "1"}
	e.commit("B", "b", snapshot.WithLabels(nl))
	if got := e.stat("B").Labels; fmt.Sprint(got) != fmt.Sprint(nl) {
		e.Errorf("Commit labels %v, want %v", got, nl)
	}
}

func testParentChain(e *env) {
	parent := ""
	for i := 0; i < 4; i++ {
		key, name := fmt.Sprintf("k%d", i), fmt.Sprintf("L%d", i)
		e.writeFile(e.writable(e.prepare(key, parent)), name, name)
		e.commit(name, key)
		if got := e.stat(name).Parent; got != parent {
			e.Errorf("Stat(%s).Parent = %q, want %q", name, got, parent)
		}
		parent = name
	}
	seen := map[string]snapshot.Info{}
	e.ok(e.sn.Walk(e.ctx, func(_ context.Context, i snapshot.Info) error {
		seen[i.Key] = i
		return nil
	}))
	if len(seen) != 4 {
		e.Errorf("Walk saw %d snapshots, want 4: %v", len(seen), seen)
	}
	ids := map[string]bool{}
	for i := 0; i < 4; i++ {
		info := seen[fmt.Sprintf("L%d", i)]
		if info.Kind != snapshot.KindCommitted || ids[info.ID] {
			e.Errorf("Walk: %+v (kind or duplicate id)", info)
		}
		ids[info.ID] = true
	}
	// Walk may call back into the snapshotter, and fn's error stops it.
	stop := errors.New("stop")
	n := 0
	err := e.sn.Walk(e.ctx, func(ctx context.Context, i snapshot.Info) error {
		if _, err := e.sn.Stat(ctx, i.Key); err != nil {
			return err
		}
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		e.Errorf("Walk with failing fn: %v after %d calls", err, n)
	}
	for i := 3; i >= 0; i-- {
		e.ok(e.sn.Remove(e.ctx, fmt.Sprintf("L%d", i)))
	}
	if d := e.snapshotDirs(); len(d) != 0 {
		e.Errorf("directories left after removing the chain: %v", d)
	}
}

func testRemoveWithChildren(e *env) {
	e.prepare("p", "")
	e.commit("P", "p")
	e.view("v", "P")
	e.prepare("a", "P")
	e.wantClass("Remove(P) with a view and an active child", e.sn.Remove(e.ctx, "P"), errdefs.ErrFailedPrecondition)
	e.ok(e.sn.Remove(e.ctx, "v"))
	e.wantClass("Remove(P) with an active child", e.sn.Remove(e.ctx, "P"), errdefs.ErrFailedPrecondition)
	e.ok(e.sn.Remove(e.ctx, "a"))
	e.ok(e.sn.Remove(e.ctx, "P"))
	e.wantClass("Remove twice", e.sn.Remove(e.ctx, "P"), errdefs.ErrNotFound)
}

func testRemoveDeletesDirectory(e *env) {
	m := e.prepare("a", "")
	dir := e.idDir("a")
	e.writeFile(e.writable(m), "sub/file", "data")
	e.ok(e.sn.Remove(e.ctx, "a"))
	if exists(dir) {
		e.Errorf("%s still exists after Remove", dir)
	}
	if d := e.snapshotDirs(); len(d) != 0 {
		e.Errorf("left behind: %v", d)
	}
}

func testUsage(e *env) {
	m := e.prepare("a", "")
	base, err := e.sn.Usage(e.ctx, "a")
	e.ok(err)
	if base.Inodes < 1 {
		e.Errorf("empty snapshot usage %+v, want at least its root inode", base)
	}
	dir := e.writable(m)
	const size = 1 << 20
	e.ok(os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte{1}, size), 0o644))
	e.ok(os.Link(filepath.Join(dir, "big"), filepath.Join(dir, "big.link")))
	e.ok(os.WriteFile(filepath.Join(dir, "small"), []byte("x"), 0o644))
	u, err := e.sn.Usage(e.ctx, "a")
	e.ok(err)
	if got := u.Inodes - base.Inodes; got != 2 {
		e.Errorf("inodes grew by %d, want 2 (hard link counted once)", got)
	}
	if grow := u.Size - base.Size; grow < size || grow >= 2*size {
		e.Errorf("size grew by %d, want about %d (hard link counted once)", grow, size)
	}
	e.commit("A", "a")
	ca, err := e.sn.Usage(e.ctx, "A")
	e.ok(err)
	if ca != u {
		e.Errorf("committed usage %+v differs from active %+v", ca, u)
	}
	e.prepare("b", "A")
	ub, err := e.sn.Usage(e.ctx, "b")
	e.ok(err)
	if e.caps.DiffLayers && ub.Size >= size {
		e.Errorf("child of a diff-layer driver uses %d bytes of its own, want only its diff", ub.Size)
	}
	if !e.caps.DiffLayers && ub.Size < size {
		e.Errorf("child of a copying driver uses %d bytes, want the full copy (>= %d)", ub.Size, size)
	}
}

func testReopen(e *env) {
	e.prepare("a", "", snapshot.WithLabels(map[string]string{"x": "y"}))
	e.commit("A", "a")
	e.prepare("b", "A")
	ia, ib := e.stat("A"), e.stat("b")
	e.ok(e.sn.Close())
	sn := e.open(e.T, e.root, e.db)
	defer sn.Close()
	e.sn = sn
	if got := e.stat("A"); got.ID != ia.ID || got.Labels["x"] != "y" || got.Kind != snapshot.KindCommitted {
		e.Errorf("after reopen Stat(A) = %+v, want %+v", got, ia)
	}
	if got := e.stat("b"); got.ID != ib.ID || got.Parent != "A" {
		e.Errorf("after reopen Stat(b) = %+v, want %+v", got, ib)
	}
	e.prepare("c", "A")
	if ic := e.stat("c"); ic.ID == ia.ID || ic.ID == ib.ID {
		e.Errorf("reused id %s after reopen", ic.ID)
	}
	if _, err := e.sn.Mounts(e.ctx, "b"); err != nil {
		e.Error(err)
	}
}

func testCleanupOrphans(e *env) {
	m := e.prepare("a", "")
	e.writeFile(e.writable(m), "keep", "a")
	e.prepare("c", "")
	e.commit("C", "c")
	snaps := filepath.Join(e.root, "snapshots")
	orphans := []string{"new-123456", "rm-42", "987654321"}
	for _, o := range orphans {
		e.writeFile(filepath.Join(snaps, o, "fs"), "junk", "junk")
	}
	e.ok(e.sn.Cleanup(e.ctx))
	for _, o := range orphans {
		if exists(filepath.Join(snaps, o)) {
			e.Errorf("Cleanup left orphan %s", o)
		}
	}
	if got := e.readFile(filepath.Join(e.writable(m), "keep")); got != "a" {
		e.Errorf("Cleanup damaged a live snapshot: %q", got)
	}
	if !exists(filepath.Join(e.idDir("C"), "fs")) {
		e.Error("Cleanup removed a committed snapshot's data")
	}
	if d := e.snapshotDirs(); len(d) != 2 {
		e.Errorf("after Cleanup: %v, want the two live snapshots", d)
	}
	e.ok(e.sn.Cleanup(e.ctx)) // idempotent
}

// testOrphanAtNextID: a crash after the directory was renamed to its id
// but before the record committed leaves <id> behind while the sequence
// does not advance; the next Prepare gets that id and must not inherit the
// orphan's content.
func testOrphanAtNextID(e *env) {
	e.prepare("a", "")
	var next uint64
	_, err := fmt.Sscan(e.stat("a").ID, &next)
	e.ok(err)
	next++
	e.writeFile(filepath.Join(e.root, "snapshots", fmt.Sprint(next), "fs"), "junk", "junk")
	m := e.prepare("b", "")
	if id := e.stat("b").ID; id != fmt.Sprint(next) {
		e.Skipf("driver allocated id %s, not the next sequence value %d", id, next)
	}
	if exists(filepath.Join(e.writable(m), "junk")) {
		e.Error("new snapshot inherited an orphan directory's content")
	}
}

func testConcurrent(e *env) {
	e.prepare("p", "")
	e.commit("P", "p")
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = e.sn.Prepare(e.ctx, fmt.Sprintf("k%d", i), "P")
		}(i)
	}
	wg.Wait()
	ids := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			e.Errorf("Prepare k%d: %v", i, err)
			continue
		}
		id := e.stat(fmt.Sprintf("k%d", i)).ID
		if ids[id] {
			e.Errorf("id %s handed out twice", id)
		}
		ids[id] = true
	}
	// One key, many racers: exactly one wins.
	var mu sync.Mutex
	wins, exist := 0, 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.sn.Prepare(e.ctx, "same", "P")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errdefs.Is(err, errdefs.ErrAlreadyExists):
				exist++
			default:
				e.Errorf("racing Prepare: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || exist != n-1 {
		e.Errorf("racing Prepare of one key: %d won, %d already-exists; want 1 and %d", wins, exist, n-1)
	}
	// Removal racing Prepare on the removed parent.
	e.prepare("q", "")
	e.commit("Q", "q")
	wg.Add(2)
	var perr, rerr error
	go func() { defer wg.Done(); _, perr = e.sn.Prepare(e.ctx, "onq", "Q") }()
	go func() { defer wg.Done(); rerr = e.sn.Remove(e.ctx, "Q") }()
	wg.Wait()
	switch {
	case perr == nil && errdefs.Is(rerr, errdefs.ErrFailedPrecondition):
	case rerr == nil && (errdefs.Is(perr, errdefs.ErrNotFound) || errdefs.Is(perr, errdefs.ErrAborted)):
	default:
		e.Errorf("Prepare racing Remove of its parent: prepare %v, remove %v", perr, rerr)
	}
	if d := e.snapshotDirs(); len(d) != len(e.walkKeys()) {
		e.Errorf("%d directories for %d snapshots: %v", len(d), len(e.walkKeys()), d)
	}
}

func (e *env) walkKeys() []string {
	var keys []string
	e.ok(e.sn.Walk(e.ctx, func(_ context.Context, i snapshot.Info) error {
		keys = append(keys, i.Key)
		return nil
	}))
	return keys
}

func testCommitWithParent(e *env) {
	e.prepare("p", "")
	e.commit("P", "p")
	e.prepare("d", "")
	e.prepare("same", "P")
	e.commit("SAME", "same", snapshot.WithParent("P")) // its own parent: always fine
	if e.stat("SAME").Parent != "P" {
		e.Error("Commit WithParent(own parent) lost the parent")
	}
	err := e.sn.Commit(e.ctx, "D", "d", snapshot.WithParent("P"))
	if !e.caps.DiffLayers {
		e.wantClass("rebase on a copying driver", err, errdefs.ErrInvalidArgument)
		return
	}
	e.ok(err)
	if got := e.stat("D"); got.Parent != "P" {
		e.Errorf("rebased snapshot parent %q, want P", got.Parent)
	}
	e.wantClass("Remove rebased parent", e.sn.Remove(e.ctx, "P"), errdefs.ErrFailedPrecondition)
	m := e.view("v", "D")
	if len(m) != 1 || m[0].Type != "overlay" && m[0].Type != "bind" {
		e.Errorf("view of a two-layer chain: %+v", m)
	}
}

func testClosed(e *env) {
	e.prepare("a", "")
	e.ok(e.sn.Close())
	if _, err := e.sn.Stat(e.ctx, "a"); err == nil {
		e.Error("Stat after Close succeeded")
	}
	if _, err := e.sn.Prepare(e.ctx, "b", ""); err == nil {
		e.Error("Prepare after Close succeeded")
	}
}

func testMountEmpty(e *env) {
	target := e.mount(e.prepare("a", ""))
	e.ok(os.WriteFile(filepath.Join(target, "f"), []byte("hello"), 0o600))
	e.unmount(target)
	e.commit("A", "a")
	v := e.mount(e.view("v", "A"))
	if got := e.readFile(filepath.Join(v, "f")); got != "hello" {
		e.Errorf("view content %q", got)
	}
	if err := os.WriteFile(filepath.Join(v, "g"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		e.Errorf("write to a view: %v, want EROFS", err)
	}
	c := e.mount(e.prepare("c", "A"))
	if got := e.readFile(filepath.Join(c, "f")); got != "hello" {
		e.Errorf("child content %q", got)
	}
}

func testMountLayers(e *env) {
	e.layer("L1", "",
		tt.File("a", "a1"), tt.File("b", "b1"),
		tt.Dir("d"), tt.File("d/x", "x"), tt.Dir("d/sub"), tt.File("d/sub/y", "y"),
		tt.Dir("e"), tt.File("e/keep", "k"),
	)
	e.layer("L2", "L1",
		tt.Whiteout("", "b"), tt.File("a", "a2"), tt.File("c", "c2"),
		tt.Dir("d"), tt.Opaque("d"), tt.File("d/z", "z"),
		tt.Whiteout("e", "missing"), tt.File("e/new", "n"),
	)
	v := e.mount(e.view("v", "L2"))
	want := map[string]string{"a": "a2", "c": "c2", "d/z": "z", "e/keep": "k", "e/new": "n"}
	for p, c := range want {
		if got, err := os.ReadFile(filepath.Join(v, p)); err != nil || string(got) != c {
			e.Errorf("view %s = %q, %v; want %q", p, got, err, c)
		}
	}
	for _, p := range []string{"b", "d/x", "d/sub", "e/missing", ".wh.b", "d/.wh..wh..opq"} {
		if exists(filepath.Join(v, p)) {
			e.Errorf("view shows %s, which the layer whited out", p)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(v, "d")); len(ents) != 1 {
		e.Errorf("opaque directory d lists %d entries, want 1", len(ents))
	}
	// A container on top writes into its own snapshot only.
	c := e.mount(e.prepare("ctr", "L2"))
	e.ok(os.WriteFile(filepath.Join(c, "a"), []byte("ctr"), 0o644))
	e.ok(os.Remove(filepath.Join(c, "c")))
	e.ok(os.RemoveAll(filepath.Join(c, "e")))
	if got := e.readFile(filepath.Join(v, "a")); got != "a2" {
		e.Errorf("container write leaked into the image view: a = %q", got)
	}
	if !exists(filepath.Join(v, "c")) || !exists(filepath.Join(v, "e/keep")) {
		e.Error("container delete leaked into the image view")
	}
	e.unmount(c)
	c2 := e.mount(e.mustMounts("ctr"))
	if got := e.readFile(filepath.Join(c2, "a")); got != "ctr" || exists(filepath.Join(c2, "c")) || exists(filepath.Join(c2, "e")) {
		e.Errorf("container changes did not persist across remount: a=%q", got)
	}
	// A second view of L1 still shows L1.
	v1 := e.mount(e.view("v1", "L1"))
	if got := e.readFile(filepath.Join(v1, "b")); got != "b1" || exists(filepath.Join(v1, "c")) {
		e.Errorf("L1 view changed: b=%q", got)
	}
}

func (e *env) mustMounts(key string) []snapshot.Mount {
	e.Helper()
	m, err := e.sn.Mounts(e.ctx, key)
	e.ok(err)
	return m
}

func testLayerMetadata(e *env) {
	mt := time.Date(2003, 4, 5, 6, 7, 8, 0, time.UTC)
	e.layer("L1", "",
		tt.Dir("bin").Owner(0, 0).Mode(0o755).Time(mt, mt),
		tt.File("bin/su", "su").Owner(0, 0).Mode(0o4755).Time(mt, mt),
		tt.File("bin/ping", "ping").Xattr("user.test", "v").Owner(11, 12).Time(mt, mt),
		tt.Link("bin/ping2", "bin/ping"),
		tt.Symlink("bin/sh", "busybox").Owner(3, 4),
		tt.Char("dev/null", 1, 3).Mode(0o666),
		tt.Fifo("run/fifo").Mode(0o620),
		tt.Dir("tmp").Mode(0o1777),
	)
	e.layer("L2", "L1", tt.File("other", "x"))
	v := e.mount(e.view("v", "L2"))
	st := func(p string) *unix.Stat_t {
		var s unix.Stat_t
		e.ok(unix.Lstat(filepath.Join(v, p), &s))
		return &s
	}
	if s := st("bin/su"); s.Mode != unix.S_IFREG|0o4755 || s.Mtim.Sec != mt.Unix() {
		e.Errorf("bin/su mode %o mtime %d", s.Mode, s.Mtim.Sec)
	}
	p, p2 := st("bin/ping"), st("bin/ping2")
	if p.Uid != 11 || p.Gid != 12 || p.Ino != p2.Ino || p.Nlink != 2 {
		e.Errorf("bin/ping owner %d:%d nlink %d, hard link shares inode: %v", p.Uid, p.Gid, p.Nlink, p.Ino == p2.Ino)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(v, "bin/ping"), "user.test", buf); err != nil || string(buf[:n]) != "v" {
		e.Errorf("xattr user.test = %q, %v", buf[:n], err)
	}
	if s := st("bin/sh"); s.Mode&unix.S_IFMT != unix.S_IFLNK || s.Uid != 3 || s.Gid != 4 {
		e.Errorf("bin/sh mode %o owner %d:%d", s.Mode, s.Uid, s.Gid)
	}
	if s := st("dev/null"); s.Mode != unix.S_IFCHR|0o666 || s.Rdev != unix.Mkdev(1, 3) {
		e.Errorf("dev/null mode %o rdev %x", s.Mode, s.Rdev)
	}
	if s := st("run/fifo"); s.Mode != unix.S_IFIFO|0o620 {
		e.Errorf("run/fifo mode %o", s.Mode)
	}
	if s := st("tmp"); s.Mode != unix.S_IFDIR|0o1777 {
		e.Errorf("tmp mode %o", s.Mode)
	}
	if s := st("bin"); s.Mtim.Sec != mt.Unix() {
		e.Errorf("bin mtime %d, want %d", s.Mtim.Sec, mt.Unix())
	}
}

func testChain128(e *env) {
	const n = 128
	parent := ""
	for i := 0; i < n; i++ {
		key, name := fmt.Sprintf("k%d", i), fmt.Sprintf("L%d", i)
		p := parent
		if e.caps.DiffLayers {
			p = ""
		}
		e.writeFile(e.writable(e.prepare(key, p)), fmt.Sprintf("f%03d", i), name)
		var opts []snapshot.Opt
		if parent != "" {
			opts = append(opts, snapshot.WithParent(parent))
		}
		e.commit(name, key, opts...)
		parent = name
	}
	check := func(dir string) {
		e.Helper()
		for i := 0; i < n; i++ {
			if got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%03d", i))); err != nil || string(got) != fmt.Sprintf("L%d", i) {
				e.Fatalf("layer %d: %q, %v", i, got, err)
			}
		}
	}
	check(e.mount(e.view("v", parent)))
	c := e.mount(e.prepare("ctr", parent))
	check(c)
	e.ok(os.WriteFile(filepath.Join(c, "f000"), []byte("changed"), 0o644))
	if got := e.readFile(filepath.Join(c, "f000")); got != "changed" {
		e.Errorf("write on a 128-layer container rootfs: %q", got)
	}
}

// testSyncEntries: the entries a layer's ApplyResult.Flush lists are
// found in the committed snapshot (an error would fail the pull); a
// missing key is NotFound.
func testSyncEntries(e *env) {
	dir := e.writable(e.prepare("extract", ""))
	res, err := snapshot.ApplyLayer(e.ctx, dir, bytes.NewReader(tt.Tar(tt.Dir("etc"), tt.File("etc/x", "1"), tt.File("usr/bin/y", "2"))), e.caps.Whiteouts)
	if err != nil {
		e.Fatal(err)
	}
	e.commit("layer", "extract")
	names := res.Flush
	if names == nil {
		names = []string{".", "etc", "usr", "usr/bin", "etc/x", "usr/bin/y"} // WhiteoutRemove lists none
	}
	e.ok(e.sn.SyncEntries(e.ctx, "layer", names))
	if err := e.sn.SyncEntries(e.ctx, "layer", []string{"etc/x", "x/../../../etc/passwd-not-here"}); err != nil {
		e.Errorf("SyncEntries of a name not there (resolved inside the snapshot) = %v", err)
	}
	e.wantClass("SyncEntries of a missing key", e.sn.SyncEntries(e.ctx, "missing", []string{"."}), errdefs.ErrNotFound)
}

// testPrepareWithoutSync: a snapshot prepared without a flush, as a pull
// prepares the snapshots it unpacks into, is flushed while still active
// (SyncEntries), committed, built on and read as any other; a crash that
// lost its directory leaves a record Remove and Cleanup accept.
func testPrepareWithoutSync(e *env) {
	before := fsutil.DirSyncs.Load()
	dir := e.writable(e.prepare("extract", "", snapshot.WithoutSync()))
	if n := fsutil.DirSyncs.Load() - before; n != 0 {
		e.Errorf("Prepare WithoutSync flushed %d directories, want none", n)
	}
	before = fsutil.DirSyncs.Load()
	e.prepare("synced", "")
	if n := fsutil.DirSyncs.Load() - before; n != 2 {
		e.Errorf("Prepare flushed %d directories, want 2 (its own, its name)", n)
	}
	res, err := snapshot.ApplyLayer(e.ctx, dir, bytes.NewReader(tt.Tar(tt.Dir("etc"), tt.File("etc/x", "1"))), e.caps.Whiteouts)
	e.ok(err)
	names := res.Flush
	if names == nil {
		names = []string{".", "etc", "etc/x"} // WhiteoutRemove lists none
	}
	before = fsutil.DirSyncs.Load()
	e.ok(e.sn.SyncEntries(e.ctx, "extract", names))
	if n := fsutil.DirSyncs.Load() - before; n != 2 {
		e.Errorf("SyncEntries flushed %d directories besides the entries, want 2 (the snapshot's own, its name)", n)
	}
	e.commit("layer", "extract", snapshot.WithoutSync())
	e.ok(e.sn.SyncEntries(e.ctx, "layer", names))
	if got := e.readFile(filepath.Join(e.mount(e.view("view", "layer")), "etc/x")); got != "1" {
		e.Errorf("etc/x of the committed layer = %q, want 1", got)
	}
	child := e.writable(e.prepare("child", "layer", snapshot.WithoutSync()))
	e.writeFile(child, "etc/y", "2")
	e.commit("layer2", "child", snapshot.WithoutSync())
	if got := e.readFile(filepath.Join(e.mount(e.view("view2", "layer2")), "etc/y")); got != "2" {
		e.Errorf("etc/y of the second layer = %q, want 2", got)
	}

	// What a crash after the record, before its directory reached the
	// disk, leaves.
	e.prepare("lost", "", snapshot.WithoutSync())
	e.ok(os.RemoveAll(e.idDir("lost")))
	e.ok(e.sn.Remove(e.ctx, "lost"))
	e.ok(e.sn.Cleanup(e.ctx))
	e.wantClass("Stat of the removed snapshot", func() error { _, err := e.sn.Stat(e.ctx, "lost"); return err }(), errdefs.ErrNotFound)
	if got := e.readFile(filepath.Join(e.mount(e.view("view3", "layer")), "etc/x")); got != "1" {
		e.Errorf("etc/x of the committed layer after the Cleanup = %q, want 1", got)
	}
}
