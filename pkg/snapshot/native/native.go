// Package native is the copy-based snapshot driver: every active snapshot
// with a parent starts as a full copy of it, so it works on any filesystem
// and needs no overlayfs. Layers are applied with snapshot.WhiteoutRemove
// into a Prepare(key, parent) of their parent.
//
// Layout: <root>/snapshots/<id>/fs. A view of a committed snapshot is not
// copied: it bind mounts the parent's fs read-only.
package native

import (
	"context"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
	"github.com/shim-cri/shim/pkg/snapshot/internal/storage"
)

// Name is the driver name; metadata lives in the bucket "snapshot.native".
const Name = "native"

type core = storage.Snapshotter

// Snapshotter is the native driver. It implements snapshot.Snapshotter.
type Snapshotter struct {
	*core
}

var _ snapshot.Snapshotter = (*Snapshotter)(nil)

// New opens the native driver in root. The caller owns db.
func New(ctx context.Context, root string, db *bbolt.DB) (*Snapshotter, error) {
	c, err := storage.New(ctx, root, db, Name, driver{})
	if err != nil {
		return nil, err
	}
	return &Snapshotter{core: c}, nil
}

type driver struct{}

func (driver) Capabilities() snapshot.Capabilities {
	return snapshot.Capabilities{DiffLayers: false, Whiteouts: snapshot.WhiteoutRemove}
}

func (driver) Populate(ctx context.Context, dir string, kind snapshot.Kind, parents []string) error {
	fs := filepath.Join(dir, "fs")
	if kind != snapshot.KindActive || len(parents) == 0 {
		return os.Mkdir(fs, 0o755)
	}
	if err := snapshot.Copy(ctx, filepath.Join(parents[0], "fs"), fs); err != nil {
		return err
	}
	return fsutil.SyncFS(fs)
}

func (driver) Mounts(dir string, kind snapshot.Kind, parents []string) []snapshot.Mount {
	src, mode := filepath.Join(dir, "fs"), "rw"
	if kind == snapshot.KindView {
		mode = "ro"
		if len(parents) > 0 {
			src = filepath.Join(parents[0], "fs")
		}
	}
	return []snapshot.Mount{{Type: "bind", Source: src, Options: []string{mode, "rbind"}}}
}

func (driver) CleanupCommitted(context.Context, string) error { return nil }
