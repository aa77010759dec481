// Package overlay is the default snapshot driver: every committed snapshot
// holds only its layer's diff and snapshots stack with overlayfs.
//
// The driver runs as real root in the host user namespace: whiteouts are
// 0:0 character devices, opaque directories carry trusted.overlay.opaque,
// and mounts do not use the userxattr option rootless overlay would need. When the host
// enables the overlay index feature by default, mounts carry index=off,
// since snapshots share lower layers between many upper directories.
//
// Layout: <root>/snapshots/<id>/fs (the layer, or an active snapshot's
// upperdir) and <root>/snapshots/<id>/work (overlay's workdir). Ids are
// short bolt sequence numbers, so a 128-layer lowerdir list stays near a
// page; longer ones are handled by snapshot.MountAll.
package overlay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
	"github.com/shim-cri/shim/pkg/snapshot/internal/storage"
)

// Name is the driver name; metadata lives in the bucket "snapshot.overlay".
const Name = "overlay"

type core = storage.Snapshotter

// Snapshotter is the overlay driver. It implements snapshot.Snapshotter.
type Snapshotter struct {
	*core
}

var _ snapshot.Snapshotter = (*Snapshotter)(nil)

// New checks that the kernel can mount overlayfs over root's filesystem
// (with a real test mount; needs CAP_SYS_ADMIN) and opens the driver.
// root must be on a filesystem overlayfs accepts as upper (ext4, xfs with
// d_type, btrfs, ...). The caller owns db.
func New(ctx context.Context, root string, db *bbolt.DB) (*Snapshotter, error) {
	if err := storage.ValidRoot(root); err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	opts, err := check(root)
	if err != nil {
		return nil, err
	}
	c, err := storage.New(ctx, root, db, Name, &driver{opts: opts})
	if err != nil {
		return nil, err
	}
	return &Snapshotter{core: c}, nil
}

type driver struct {
	opts []string // options every overlay mount carries (index=off)
}

func (d *driver) Capabilities() snapshot.Capabilities {
	return snapshot.Capabilities{DiffLayers: true, Whiteouts: snapshot.WhiteoutOverlay}
}

func (d *driver) Populate(ctx context.Context, dir string, kind snapshot.Kind, parents []string) error {
	fs := filepath.Join(dir, "fs")
	if err := os.Mkdir(fs, 0o755); err != nil {
		return err
	}
	if kind != snapshot.KindActive {
		return nil
	}
	if err := os.Mkdir(filepath.Join(dir, "work"), 0o700); err != nil {
		return err
	}
	if len(parents) > 0 {
		// The upperdir root is the merged root: give it the owner
		// and mode of the layer below.
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(parents[0], "fs"), &st); err != nil {
			return err
		}
		if err := unix.Chown(fs, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if err := unix.Chmod(fs, st.Mode&0o7777); err != nil {
			return err
		}
	}
	return nil
}

func fsDirs(parents []string) []string {
	out := make([]string, len(parents))
	for i, p := range parents {
		out[i] = filepath.Join(p, "fs")
	}
	return out
}

func (d *driver) Mounts(dir string, kind snapshot.Kind, parents []string) []snapshot.Mount {
	if kind == snapshot.KindView {
		switch len(parents) {
		case 0:
			return []snapshot.Mount{bind(filepath.Join(dir, "fs"), "ro")}
		case 1:
			return []snapshot.Mount{bind(filepath.Join(parents[0], "fs"), "ro")}
		}
		opts := append(append([]string{}, d.opts...), "lowerdir="+strings.Join(fsDirs(parents), ":"))
		return []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
	}
	if len(parents) == 0 {
		return []snapshot.Mount{bind(filepath.Join(dir, "fs"), "rw")}
	}
	opts := append(append([]string{}, d.opts...),
		"workdir="+filepath.Join(dir, "work"),
		"upperdir="+filepath.Join(dir, "fs"),
		"lowerdir="+strings.Join(fsDirs(parents), ":"),
	)
	return []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
}

func bind(src, mode string) snapshot.Mount {
	return snapshot.Mount{Type: "bind", Source: src, Options: []string{mode, "rbind"}}
}

// CleanupCommitted removes the workdir a committed snapshot kept from its
// active life.
func (d *driver) CleanupCommitted(ctx context.Context, dir string) error {
	return fsutil.RemoveAll(filepath.Join(dir, "work"))
}

// check mounts a two-layer overlay with an upper dir below root, which
// proves the kernel has overlayfs and root's filesystem can be an upper
// layer, and returns the options every mount needs.
func check(root string) ([]string, error) {
	// Leftovers of a check interrupted by a crash.
	stale, _ := filepath.Glob(filepath.Join(root, ".overlay-check-*"))
	for _, d := range stale {
		if err := snapshot.UnmountAll(filepath.Join(d, "merged")); err != nil {
			return nil, err
		}
		if err := fsutil.RemoveAll(d); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp(root, ".overlay-check-")
	if err != nil {
		return nil, err
	}
	defer fsutil.RemoveAll(tmp)
	for _, d := range []string{"l1", "l2", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o700); err != nil {
			return nil, err
		}
	}
	var opts []string
	// With index=on (a kernel or module default) an upper dir records
	// its lower layers and refuses to be mounted over a different
	// stack; snapshots share lower layers freely, so turn it off.
	if b, err := os.ReadFile("/sys/module/overlay/parameters/index"); err == nil && strings.TrimSpace(string(b)) == "Y" {
		opts = append(opts, "index=off")
	}
	data := strings.Join(append(append([]string{}, opts...),
		"lowerdir="+filepath.Join(tmp, "l1")+":"+filepath.Join(tmp, "l2"),
		"upperdir="+filepath.Join(tmp, "upper"),
		"workdir="+filepath.Join(tmp, "work"),
	), ",")
	merged := filepath.Join(tmp, "merged")
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		switch {
		case errors.Is(err, syscall.ENODEV):
			return nil, fmt.Errorf("overlay: kernel has no overlayfs: %w", errdefs.ErrNotImplemented)
		case errors.Is(err, syscall.EPERM):
			return nil, fmt.Errorf("overlay: test mount: %w: %w", errdefs.ErrPermissionDenied, err)
		}
		return nil, fmt.Errorf("overlay: test mount over %s: %w: %w", root, errdefs.ErrNotImplemented, err)
	}
	if err := unix.Unmount(merged, 0); err != nil {
		return nil, fmt.Errorf("overlay: unmount test mount: %w", err)
	}
	// The module may have been loaded by the mount: read index again.
	if len(opts) == 0 {
		if b, err := os.ReadFile("/sys/module/overlay/parameters/index"); err == nil && strings.TrimSpace(string(b)) == "Y" {
			opts = append(opts, "index=off")
		}
	}
	return opts, nil
}
