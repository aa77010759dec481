package fsutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestSyncEntries: files and directories are flushed, names gone since are
// skipped, and anything else is an error (ApplyResult.Flush never lists
// it: a layer with one is flushed with its filesystem).
func TestSyncEntries(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d/f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/f", filepath.Join(root, "l")); err != nil {
		t.Fatal(err)
	}
	if err := SyncEntries(context.Background(), root, []string{".", "d", "d/e", "d/f", "gone", "d/gone", "gone/f"}); err != nil {
		t.Errorf("SyncEntries: %v", err)
	}
	for _, bad := range []string{"l"} {
		if err := SyncEntries(context.Background(), root, []string{"d/f", bad}); err == nil {
			t.Errorf("SyncEntries(%q) = nil, want an error", bad)
		}
	}
	if err := SyncEntries(context.Background(), filepath.Join(root, "gone"), []string{"."}); err == nil {
		t.Error("SyncEntries of a missing root = nil, want an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := SyncEntries(ctx, root, []string{"d/f"}); !errors.Is(err, context.Canceled) {
		t.Errorf("SyncEntries with a cancelled context = %v, want context.Canceled", err)
	}
}
