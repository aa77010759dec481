// Package snapshot is shim's graphdriver: filesystem snapshots of image
// layers and container root filesystems, keyed by name, in the spirit of
// containerd's Snapshotter. A driver returns mounts and never mounts
// anything itself (apart from short-lived internal mounts it cleans up).
//
// Drivers: overlay (default; committed layers are diffs stacked with
// overlayfs) and native (every snapshot is a full copy; works anywhere).
// One conformance suite (pkg/snapshot/testsuite) runs against both.
//
// Both drivers keep their metadata in the caller's bbolt DB (bucket
// "snapshot.<driver>") and their data in <root>/snapshots/<id>/fs, where
// <id> is a short bolt sequence number. A root belongs to one driver.
//
// This package also holds what callers need around the drivers: Apply
// (safe layer tar extraction, whiteouts in the driver's WhiteoutMode),
// MountAll/UnmountAll (performing the returned mounts) and Copy (a full
// tree copy: the native driver's snapshots, an image VOLUME's contents).
//
// Unpacking a layer:
//
//	caps := sn.Capabilities()
//	parent := prevChainID
//	if caps.DiffLayers {
//		parent = "" // unpack alone, rebase at Commit; layers can unpack in parallel
//	}
//	mounts, _ := sn.Prepare(ctx, "extract-"+chainID, parent)
//	// mount (or, for a bind mount, use its Source directly), then:
//	_, err := snapshot.Apply(ctx, dir, uncompressedLayer, caps.Whiteouts)
//	err = sn.Commit(ctx, chainID, "extract-"+chainID, snapshot.WithParent(prevChainID))
package snapshot

import (
	"context"
	"time"
)

// Kind is the state of a snapshot.
type Kind int

const (
	KindActive    Kind = iota + 1 // read-write, may be committed
	KindView                      // read-only view of a committed parent
	KindCommitted                 // immutable; may be a parent
)

func (k Kind) String() string {
	switch k {
	case KindActive:
		return "active"
	case KindView:
		return "view"
	case KindCommitted:
		return "committed"
	}
	return "unknown"
}

// Info describes a snapshot.
type Info struct {
	Key     string            // name of the snapshot (chain ID for committed layers)
	Parent  string            // key of the parent committed snapshot, "" for none
	Kind    Kind              //
	ID      string            // short numeric id naming the on-disk directory
	Labels  map[string]string //
	Created time.Time         //
}

// Usage is the disk usage of the snapshot's own data (not its parents').
type Usage struct {
	Size   int64 // bytes
	Inodes int64
}

// Mount is one mount a caller performs to get the snapshot's filesystem.
type Mount struct {
	Type    string   // "overlay" or "bind"
	Source  string   //
	Options []string // mount(8)-style options: "ro", "rbind", "lowerdir=...", ...
}

// Capabilities of a driver.
type Capabilities struct {
	// DiffLayers is true when a committed snapshot holds only its own diff,
	// so a layer can be unpacked into an active snapshot prepared without
	// its parent and rebased onto the parent at Commit (WithParent). This
	// lets image layers unpack in parallel.
	DiffLayers bool
	// Whiteouts says how a layer tar's whiteouts must be written when a
	// layer is applied into this driver's active snapshots.
	Whiteouts WhiteoutMode
}

// WhiteoutMode says how an applier writes OCI whiteouts.
type WhiteoutMode int

const (
	// WhiteoutOverlay: ".wh.x" becomes a 0:0 character device "x";
	// ".wh..wh..opq" sets trusted.overlay.opaque=y on its directory.
	WhiteoutOverlay WhiteoutMode = iota + 1
	// WhiteoutRemove: ".wh.x" removes "x" from the (full copy) target;
	// ".wh..wh..opq" empties its directory of entries from lower layers.
	WhiteoutRemove
)

// Opt changes how a snapshot is created or committed.
type Opt func(*Options)

// Options are set through Opt functions.
type Options struct {
	Labels map[string]string
	// Parent, at Commit only, rebases the snapshot onto a committed parent
	// (drivers with DiffLayers only).
	Parent string
	// NoSync, at Prepare and Commit, skips flushing the snapshot's
	// directory (Prepare) and data (Commit): the caller calls Sync or
	// SyncEntries before it depends on the snapshot surviving a crash,
	// and removes what a crash before that leaves (the record may
	// outlive its directory).
	NoSync bool
	// InheritDirs, at Commit with a rebase (DiffLayers drivers), are
	// directories of the snapshot ("." for its root) that take owner,
	// mode and xattrs from the same directory in the parent chain, where
	// it exists there: ApplyResult.Implicit of a layer unpacked alone.
	InheritDirs []string
}

// WithLabels sets labels on a snapshot.
func WithLabels(l map[string]string) Opt {
	return func(o *Options) { o.Labels = l }
}

// WithParent, at Commit, records parent as the new snapshot's parent.
func WithParent(parent string) Opt {
	return func(o *Options) { o.Parent = parent }
}

// WithoutSync, at Prepare and Commit, leaves the flush to a later Sync or
// SyncEntries (a pull prepares and commits many layers and flushes each
// when it is ready, or the filesystem once).
func WithoutSync() Opt {
	return func(o *Options) { o.NoSync = true }
}

// WithInheritDirs, at Commit, gives the listed implicit directories the
// attributes they have in the parent chain.
func WithInheritDirs(dirs []string) Opt {
	return func(o *Options) { o.InheritDirs = dirs }
}

// Snapshotter is the graphdriver interface.
//
// Errors wrap errdefs classes: ErrNotFound for a missing key or parent,
// ErrAlreadyExists for a key in use, ErrFailedPrecondition for removing a
// snapshot that has children or committing a non-active snapshot,
// ErrInvalidArgument for bad keys.
type Snapshotter interface {
	Capabilities() Capabilities
	Stat(ctx context.Context, key string) (Info, error)
	// Prepare creates an active (read-write) snapshot key on top of parent
	// ("" for an empty one) and returns the mounts for it.
	Prepare(ctx context.Context, key, parent string, opts ...Opt) ([]Mount, error)
	// View creates a read-only snapshot key of committed parent.
	View(ctx context.Context, key, parent string, opts ...Opt) ([]Mount, error)
	// Mounts returns the mounts of an active or view snapshot.
	Mounts(ctx context.Context, key string) ([]Mount, error)
	// Commit turns active snapshot key into committed snapshot name. The
	// active key is gone afterwards. Commit is durable when it returns.
	Commit(ctx context.Context, name, key string, opts ...Opt) error
	// Remove deletes a snapshot that has no children.
	Remove(ctx context.Context, key string) error
	// Walk calls fn for every snapshot, in no particular order.
	Walk(ctx context.Context, fn func(context.Context, Info) error) error
	// Usage reports the disk usage of key's own data.
	Usage(ctx context.Context, key string) (Usage, error)
	// Sync flushes the data of every snapshot to disk.
	Sync(ctx context.Context) error
	// SyncEntries flushes the listed entries of key (regular files and
	// directories, names relative to its root: ApplyResult.Flush of the
	// layer unpacked into it) to disk, and the snapshot's own directory
	// and its name (which Prepare WithoutSync left unflushed).
	SyncEntries(ctx context.Context, key string, names []string) error
	// Cleanup removes on-disk data that no snapshot record refers to
	// (left by a crash between the steps of Prepare/Commit/Remove).
	Cleanup(ctx context.Context) error
	Close() error
}
