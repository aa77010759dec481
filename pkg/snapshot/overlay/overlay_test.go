package overlay

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/native"
	"github.com/shim-cri/shim/pkg/snapshot/testsuite"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

func TestOverlay(t *testing.T) {
	requireRoot(t) // New makes a test mount
	testsuite.Run(t, func(t *testing.T, root string, db *bbolt.DB) snapshot.Snapshotter {
		s, err := New(context.Background(), root, db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func openDB(t *testing.T) *bbolt.DB {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMountShapes(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s, err := New(ctx, t.TempDir(), openDB(t))
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Capabilities(); !c.DiffLayers || c.Whiteouts != snapshot.WhiteoutOverlay {
		t.Errorf("capabilities %+v", c)
	}
	m, err := s.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || m[0].Type != "bind" || !strings.HasSuffix(m[0].Source, "/fs") || m[0].Options[0] != "rw" {
		t.Errorf("parentless active: %+v", m)
	}
	if err := s.Commit(ctx, "A", "a"); err != nil {
		t.Fatal(err)
	}
	m, _ = s.View(ctx, "va", "A")
	if len(m) != 1 || m[0].Type != "bind" || m[0].Options[0] != "ro" {
		t.Errorf("single-layer view: %+v", m)
	}
	if _, err := s.Prepare(ctx, "b", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "B", "b", snapshot.WithParent("A")); err != nil {
		t.Fatal(err)
	}
	m, _ = s.View(ctx, "vb", "B")
	if len(m) != 1 || m[0].Type != "overlay" {
		t.Fatalf("two-layer view: %+v", m)
	}
	for _, o := range m[0].Options {
		if strings.HasPrefix(o, "upperdir=") || strings.HasPrefix(o, "workdir=") {
			t.Errorf("view has %s", o)
		}
	}
	lower := optionValue(m[0].Options, "lowerdir")
	ib, _ := s.Stat(ctx, "B")
	ia, _ := s.Stat(ctx, "A")
	want := filepath.Join(s.Root(), ib.ID, "fs") + ":" + filepath.Join(s.Root(), ia.ID, "fs")
	if lower != want {
		t.Errorf("lowerdir=%s, want nearest first %s", lower, want)
	}
	m, _ = s.Prepare(ctx, "c", "B")
	ic, _ := s.Stat(ctx, "c")
	if optionValue(m[0].Options, "upperdir") != filepath.Join(s.Root(), ic.ID, "fs") ||
		optionValue(m[0].Options, "workdir") != filepath.Join(s.Root(), ic.ID, "work") ||
		optionValue(m[0].Options, "lowerdir") != want {
		t.Errorf("active on B: %+v", m)
	}
	// Cleanup trims the committed snapshots' workdirs, not the active's.
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), ib.ID, "work")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("committed workdir after Cleanup: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), ic.ID, "work")); err != nil {
		t.Errorf("active workdir after Cleanup: %v", err)
	}
}

func optionValue(opts []string, key string) string {
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, key+"="); ok {
			return v
		}
	}
	return ""
}

func TestRootOwnedByOneDriver(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	root, db := t.TempDir(), openDB(t)
	if _, err := New(ctx, root, db); err != nil {
		t.Fatal(err)
	}
	if _, err := native.New(ctx, root, db); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("native on an overlay root: %v, want failed precondition", err)
	}
	if _, err := New(ctx, "relative/root", db); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("relative root: %v", err)
	}
	if _, err := New(ctx, filepath.Join(t.TempDir(), "a:b"), db); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("root with ':': %v", err)
	}
}
