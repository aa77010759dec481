package imagestore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shim-cri/shim/pkg/snapshot"
)

// TestPullFlush: a pull flushes what it wrote entry by entry when every
// layer listed its entries (overlay), and the filesystem when one did not
// (more than snapshot.MaxFlushEntries entries) or the driver copies
// parents (native); a layer another pull committed and has not flushed
// yet is flushed by the first pull that records an image using it.
func TestPullFlush(t *testing.T) {
	reg := newTestRegistry(t)
	small := layerOf(t, map[string]string{"etc/": "", "etc/os-release": "ID=a\n"}, "gzip")
	other := layerOf(t, map[string]string{"bin/tool": "x"}, "zstd")
	files := map[string]string{}
	for i := range snapshot.MaxFlushEntries {
		files[fmt.Sprintf("f/%d", i)] = "x"
	}
	many := layerOf(t, files, "gzip")
	reg.push(t, "lib/small:1", imageOf(t, "", small, other))
	reg.push(t, "lib/many:1", imageOf(t, "", small, many))
	reg.push(t, "lib/shared:1", imageOf(t, "", small))

	pull := func(s *testStore, ref string) string {
		t.Helper()
		flushed := ""
		_, err := s.Pull(ctx, reg.host+"/"+ref, nil, func(format string, args ...any) {
			if msg, ok := strings.CutPrefix(fmt.Sprintf(format, args...), "flushed to disk in "); ok {
				_, flushed, _ = strings.Cut(msg, ": ")
			}
		})
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if n := len(s.unflushed.m); n != 0 {
			t.Errorf("after pulling %s, %d layers are left unflushed", ref, n)
		}
		return flushed
	}

	rec := &recordingSnapshotter{}
	s := newStore(t, "overlay", "", rec.wrap)
	// Each layer was flushed as soon as it was unpacked (".", "etc",
	// "etc/os-release"; ".", "bin", "bin/tool"); left are what the second
	// layer's commit changed, its implicit directories (".", "bin"), the
	// manifest and the config (the layers' blobs are not kept).
	if got, want := pull(s, "lib/small:1"), "2 entries of 2 layers and 2 blobs"; got != want {
		t.Errorf("small layers flushed %q, want %q", got, want)
	}
	rec.checkFlushedEarly(t, 2)
	// Kept, the layers' blobs are flushed too.
	if got, want := pull(newStore(t, "overlay", "", keepBlobs), "lib/small:1"), "2 entries of 2 layers and 4 blobs"; got != want {
		t.Errorf("small layers with their blobs kept flushed %q, want %q", got, want)
	}
	if got, want := pull(s, "lib/many:1"), "the filesystem"; got != want {
		t.Errorf("a layer of %d files flushed %q, want %q", snapshot.MaxFlushEntries, got, want)
	}

	// As if another pull had just committed the small layer and not yet
	// flushed it.
	diffID, err := small.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	committed := func(key string, names []string) {
		s.unflushed.begin(key, names)
		s.unflushed.end(key, true)
	}
	committed(diffID.String(), []string{".", "etc", "etc/os-release"})
	if got, want := pull(s, "lib/shared:1"), "3 entries of 1 layers and 2 blobs"; got != want {
		t.Errorf("a shared unflushed layer flushed %q, want %q", got, want)
	}
	committed(diffID.String(), nil)
	if got, want := pull(s, "lib/shared:1"), "the filesystem"; got != want {
		t.Errorf("a shared unflushed layer without its entries flushed %q, want %q", got, want)
	}

	// Five layers of 62 entries (".", "f" and 60 files): four are
	// flushed as they are unpacked (248 entries), the fifth would pass
	// maxFlushEntries and is left to the last flush, entry by entry.
	var wide []v1.Layer
	for l := range 5 {
		files := map[string]string{}
		for i := range 60 {
			files[fmt.Sprintf("f/%d", i)] = fmt.Sprint(l)
		}
		wide = append(wide, layerOf(t, files, "gzip"))
	}
	reg.push(t, "lib/wide:1", imageOf(t, "", wide...))
	rec = &recordingSnapshotter{}
	got := pull(newStore(t, "overlay", "", rec.wrap), "lib/wide:1")
	// Left: the fifth's 62 entries, and the implicit directories (".",
	// "f") of the others but the first (which has no parent).
	var n int
	if _, err := fmt.Sscanf(got, "%d entries of 5 layers and 2 blobs", &n); err != nil || n != 68 && n != 70 {
		t.Errorf("five wide layers flushed %q, want 68 or 70 entries of 5 layers and 2 blobs", got)
	}
	rec.checkFlushedEarly(t, 4)

	rec = &recordingSnapshotter{}
	if got, want := pull(newStore(t, "native", "", rec.wrap), "lib/small:1"), "the filesystem"; got != want {
		t.Errorf("native driver flushed %q, want %q", got, want)
	}
	rec.checkFlushedEarly(t, 0)
}

// recordingSnapshotter records the calls a pull makes to prepare, flush
// and commit its layers' snapshots.
type recordingSnapshotter struct {
	snapshot.Snapshotter
	mu    sync.Mutex
	calls []string
}

func (r *recordingSnapshotter) wrap(c *Config) {
	r.Snapshotter = c.Snapshotter
	c.Snapshotter = r
}

func (r *recordingSnapshotter) record(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

func (r *recordingSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]snapshot.Mount, error) {
	var o snapshot.Options
	for _, f := range opts {
		f(&o)
	}
	r.record("prepare %s nosync=%v", key, o.NoSync)
	return r.Snapshotter.Prepare(ctx, key, parent, opts...)
}

func (r *recordingSnapshotter) SyncEntries(ctx context.Context, key string, names []string) error {
	r.record("sync %s %s", key, strings.Join(names, ","))
	return r.Snapshotter.SyncEntries(ctx, key, names)
}

func (r *recordingSnapshotter) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	r.record("commit %s", key)
	return r.Snapshotter.Commit(ctx, name, key, opts...)
}

// checkFlushedEarly checks that the pull prepared each snapshot it
// unpacked into without a flush, and that want of them were flushed, all
// their entries, before their commit (and the others not).
func (r *recordingSnapshotter) checkFlushedEarly(t *testing.T, want int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	synced := map[string]bool{}
	early := 0
	for _, c := range r.calls {
		f := strings.Fields(c)
		if len(f) < 2 || !strings.HasPrefix(f[1], extractPrefix) {
			continue
		}
		switch f[0] {
		case "prepare":
			if f[2] != "nosync=true" {
				t.Errorf("%s: prepared with a flush", c)
			}
		case "sync":
			if len(f) < 3 || len(strings.Split(f[2], ",")) < 3 {
				t.Errorf("%s: not every entry of the layer", c)
			}
			synced[f[1]] = true
		case "commit":
			if synced[f[1]] {
				early++
			}
		}
	}
	if early != want {
		t.Errorf("%d layers flushed before their commit, want %d (calls %q)", early, want, r.calls)
	}
	r.calls = nil
}

// TestUnflushedLayers: a flush forgets only the commits it covered: a
// flush of the whole filesystem not one still running when it started
// (the commit writes the layer's inherited directory attributes), one
// entry by entry not one begun since.
func TestUnflushedLayers(t *testing.T) {
	var u unflushedLayers
	commit := func(key string, names []string) {
		u.begin(key, names)
		u.end(key, true)
	}
	has := func(key string) bool { _, ok := u.m[key]; return ok }

	commit("a", []string{"."})
	commit("b", nil)
	got := u.of([]string{"a", "b", "c"})
	if len(got) != 2 || got["a"].names[0] != "." || got["b"].names != nil {
		t.Fatalf("of = %+v", got)
	}
	commit("a", []string{".", "x"}) // committed again (removed and pulled again)
	u.flushed(got)
	if !has("a") || len(u.m["a"].names) != 2 {
		t.Errorf("a's new commit was forgotten by the flush of its old one: %+v", u.m)
	}
	if has("b") {
		t.Error("b is still unflushed after its flush")
	}

	u.begin("c", nil) // committing while the filesystem flush starts
	mark := u.mark()
	u.end("c", true)
	commit("d", nil) // after it started
	u.flushedUpTo(mark)
	if has("a") {
		t.Error("a is still unflushed after a whole-filesystem flush")
	}
	for _, k := range []string{"c", "d"} {
		if !has(k) {
			t.Errorf("%s, whose commit ended after the filesystem flush started, was forgotten", k)
		}
	}

	// A commit that lost to another pull's keeps that pull's; one that
	// failed alone leaves nothing.
	u.begin("e", []string{"."})
	u.begin("e", []string{"."})
	u.end("e", true)
	u.end("e", false)
	if !has("e") {
		t.Error("e, committed by one of two pulls, was forgotten")
	}
	u.begin("f", nil)
	u.end("f", false)
	if has("f") {
		t.Error("f, never committed, is listed")
	}
	u.forget("e")
	if has("e") {
		t.Error("e is listed after forget")
	}
}
