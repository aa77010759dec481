// Package storage is the driver-independent half of the snapshotters:
// bbolt metadata, crash-safe creation and removal of snapshot directories,
// Walk, Usage and Cleanup. A Driver supplies what differs: how a new
// directory is filled and which mounts expose it.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
)

// Driver is what a snapshotter adds to Snapshotter.
type Driver interface {
	Capabilities() snapshot.Capabilities
	// Populate fills dir, a new empty snapshot directory (still under a
	// temporary name), for a snapshot of kind whose ancestors' directories
	// are parents (nearest first). It must leave the contents durable.
	Populate(ctx context.Context, dir string, kind snapshot.Kind, parents []string) error
	// Mounts returns the mounts of the active or view snapshot in dir.
	Mounts(dir string, kind snapshot.Kind, parents []string) []snapshot.Mount
	// CleanupCommitted removes what a committed snapshot in dir no longer
	// needs (leftovers of its active life).
	CleanupCommitted(ctx context.Context, dir string) error
}

// On-disk names below <root>/snapshots.
const (
	tempPrefix  = "new-"    // being created
	trashPrefix = "rm-"     // being removed
	markerFile  = ".driver" // names the driver owning the directory
)

// Snapshotter implements snapshot.Snapshotter over a Driver.
type Snapshotter struct {
	name    string
	bucket  []byte
	dir     string // <root>/snapshots
	db      *bbolt.DB
	drv     Driver
	caps    snapshot.Capabilities
	closed  atomic.Bool
	cleanMu sync.RWMutex // Cleanup (write) against directory creation/removal (read)
}

// New opens the snapshotter named name ("overlay", "native") in root, with
// its metadata in db under the bucket "snapshot.<name>". root must not be
// shared with another driver.
func New(ctx context.Context, root string, db *bbolt.DB, name string, drv Driver) (*Snapshotter, error) {
	if db == nil {
		return nil, fmt.Errorf("snapshotter %s: nil metadata db: %w", name, errdefs.ErrInvalidArgument)
	}
	if err := ValidRoot(root); err != nil {
		return nil, fmt.Errorf("snapshotter %s: %w", name, err)
	}
	s := &Snapshotter{
		name:   name,
		bucket: []byte("snapshot." + name),
		dir:    filepath.Join(filepath.Clean(root), "snapshots"),
		db:     db,
		drv:    drv,
		caps:   drv.Capabilities(),
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	if err := s.claim(); err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return initBuckets(tx, s.bucket) }); err != nil {
		return nil, fmt.Errorf("snapshotter %s: init metadata: %w", name, err)
	}
	log.G(ctx).WithField("root", root).Debugf("snapshotter %s ready", name)
	return s, nil
}

// ValidRoot checks a driver root: absolute and free of ':' and ',', which
// would break overlay mount options.
func ValidRoot(root string) error {
	if !filepath.IsAbs(root) || strings.ContainsAny(root, ":,") {
		return fmt.Errorf("root %q must be absolute and free of ':' and ',': %w", root, errdefs.ErrInvalidArgument)
	}
	return nil
}

// claim records the driver owning the directory, so a second driver
// pointed at the same root (whose Cleanup would delete our snapshots)
// refuses to start.
func (s *Snapshotter) claim() error {
	p := filepath.Join(s.dir, markerFile)
	b, err := os.ReadFile(p)
	if err == nil {
		if got := strings.TrimSpace(string(b)); got != s.name {
			return fmt.Errorf("snapshot directory %s belongs to driver %q, not %q: %w", s.dir, got, s.name, errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Synced before the rename: after a power cut the marker is there
	// with its content or not at all, never empty.
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s.name + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return fsutil.SyncDir(s.dir)
}

// Root returns the directory holding the snapshot directories.
func (s *Snapshotter) Root() string { return s.dir }

func (s *Snapshotter) idDir(id uint64) string {
	return filepath.Join(s.dir, strconv.FormatUint(id, 10))
}

func (s *Snapshotter) dirs(ids []uint64) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = s.idDir(id)
	}
	return out
}

func (s *Snapshotter) check() error {
	if s.closed.Load() {
		return fmt.Errorf("snapshotter %s is closed: %w", s.name, errdefs.ErrUnavailable)
	}
	return nil
}

func (s *Snapshotter) view(fn func(*mtx) error) error {
	return s.db.View(func(tx *bbolt.Tx) error {
		m, err := newMtx(tx, s.bucket)
		if err != nil {
			return err
		}
		return fn(m)
	})
}

func (s *Snapshotter) update(fn func(*mtx) error) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		m, err := newMtx(tx, s.bucket)
		if err != nil {
			return err
		}
		return fn(m)
	})
}

// Capabilities implements snapshot.Snapshotter.
func (s *Snapshotter) Capabilities() snapshot.Capabilities { return s.caps }

// Stat implements snapshot.Snapshotter.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	var info snapshot.Info
	if err := s.check(); err != nil {
		return info, err
	}
	err := s.view(func(m *mtx) error {
		r, err := m.get(key)
		if err != nil {
			return err
		}
		info = r.info(key)
		return nil
	})
	return info, err
}

// Prepare implements snapshot.Snapshotter.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]snapshot.Mount, error) {
	return s.create(ctx, snapshot.KindActive, key, parent, opts)
}

// View implements snapshot.Snapshotter.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]snapshot.Mount, error) {
	return s.create(ctx, snapshot.KindView, key, parent, opts)
}

func options(opts []snapshot.Opt) snapshot.Options {
	var o snapshot.Options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// create makes a snapshot: the directory is built under a temporary name
// and made durable, then, in one bolt transaction, the record gets its id,
// the directory is renamed to that id and the rename made durable before
// the transaction commits. A crash leaves at worst a directory no record
// names, which Cleanup removes. With snapshot.WithoutSync neither the
// directory nor its rename is flushed (each flush waits for the journal,
// and so for every other writer's data): a crash may then also leave a
// record whose directory is missing, which Remove accepts.
func (s *Snapshotter) create(ctx context.Context, kind snapshot.Kind, key, parent string, opts []snapshot.Opt) (_ []snapshot.Mount, retErr error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := validKey("key", key); err != nil {
		return nil, err
	}
	if parent != "" {
		if err := validKey("parent", parent); err != nil {
			return nil, err
		}
	}
	o := options(opts)
	if o.Parent != "" {
		return nil, fmt.Errorf("snapshot %q: WithParent applies to Commit only: %w", key, errdefs.ErrInvalidArgument)
	}

	// Fail fast, before touching the disk.
	var ancestry []uint64
	err := s.view(func(m *mtx) error {
		if m.exists(key) {
			return fmt.Errorf("snapshot %q: %w", key, errdefs.ErrAlreadyExists)
		}
		if parent == "" {
			return nil
		}
		p, err := m.committedParent(parent)
		if err != nil {
			return err
		}
		ancestry = chain(p)
		return nil
	})
	if err != nil {
		return nil, err
	}

	s.cleanMu.RLock()
	defer s.cleanMu.RUnlock()

	tmp, err := os.MkdirTemp(s.dir, tempPrefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			if err := fsutil.RemoveAll(tmp); err != nil {
				log.G(ctx).WithError(err).WithField("dir", tmp).Warn("snapshot: removing unused directory")
			}
		}
	}()
	if err := s.drv.Populate(ctx, tmp, kind, s.dirs(ancestry)); err != nil {
		if parent != "" && errors.Is(err, os.ErrNotExist) {
			// A Remove of the parent racing this Prepare took its
			// directory away: report it the way the record check
			// below would, not as a raw ENOENT.
			if verr := s.view(func(m *mtx) error {
				p, err := m.committedParent(parent)
				if err != nil {
					return err
				}
				if !sameChain(chain(p), ancestry) {
					return fmt.Errorf("parent %q changed while preparing %q: %w", parent, key, errdefs.ErrAborted)
				}
				return nil
			}); verr != nil {
				return nil, fmt.Errorf("snapshot %q: %w", key, verr)
			}
		}
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	if !o.NoSync {
		if err := fsutil.SyncDir(tmp); err != nil {
			return nil, err
		}
	}

	var rec *record
	err = s.update(func(m *mtx) error {
		r, err := m.create(key, parent, kind, o.Labels, ancestry)
		if err != nil {
			return err
		}
		final := s.idDir(r.ID)
		if err := renameNew(tmp, final); err != nil {
			return err
		}
		if !o.NoSync {
			if err := fsutil.SyncDir(s.dir); err != nil {
				// The record is not committed: take the directory back out.
				_ = os.Rename(final, tmp)
				return err
			}
		}
		rec = r
		return nil
	})
	if err != nil {
		if rec != nil {
			// Renamed, but the transaction failed to commit.
			_ = os.Rename(s.idDir(rec.ID), tmp)
		}
		return nil, err
	}
	return s.drv.Mounts(s.idDir(rec.ID), kind, s.dirs(rec.Chain)), nil
}

// renameNew renames tmp to final. final is named by an id fresh from the
// bolt sequence, so anything already there is an orphan of a transaction
// that never committed (crash after rename): it is removed.
func renameNew(tmp, final string) error {
	err := os.Rename(tmp, final)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.ENOTEMPTY) {
		return err
	}
	if err := fsutil.RemoveAll(final); err != nil {
		return fmt.Errorf("remove orphan %s: %w", final, err)
	}
	return os.Rename(tmp, final)
}

// Mounts implements snapshot.Snapshotter.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]snapshot.Mount, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var rec *record
	err := s.view(func(m *mtx) error {
		r, err := m.get(key)
		if err != nil {
			return err
		}
		if r.Kind == snapshot.KindCommitted {
			return fmt.Errorf("snapshot %q is committed; View it to mount it: %w", key, errdefs.ErrFailedPrecondition)
		}
		rec = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.drv.Mounts(s.idDir(rec.ID), rec.Kind, s.dirs(rec.Chain)), nil
}

// Commit implements snapshot.Snapshotter. The snapshot's data is flushed
// (syncfs) before the record changes, so a committed layer survives a
// crash.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validKey("name", name); err != nil {
		return err
	}
	if err := validKey("key", key); err != nil {
		return err
	}
	o := options(opts)
	if o.Parent != "" {
		if err := validKey("parent", o.Parent); err != nil {
			return err
		}
	}
	var rec, parent *record
	err := s.view(func(m *mtx) error {
		r, _, p, err := m.commitCheck(name, key, o.Parent, s.caps.DiffLayers)
		rec, parent = r, p
		return err
	})
	if err != nil {
		return err
	}
	if len(o.InheritDirs) > 0 && parent != nil && s.caps.DiffLayers {
		lowers := s.dirs(chain(parent))
		for i := range lowers {
			lowers[i] = filepath.Join(lowers[i], "fs")
		}
		if err := fsutil.InheritDirs(filepath.Join(s.idDir(rec.ID), "fs"), lowers, o.InheritDirs); err != nil {
			return fmt.Errorf("commit %q: %w", key, err)
		}
	}
	if !o.NoSync {
		if err := fsutil.SyncFS(s.idDir(rec.ID)); err != nil {
			return fmt.Errorf("commit %q: %w", key, err)
		}
	}
	return s.update(func(m *mtx) error {
		r, err := m.commit(name, key, o.Parent, o.Labels, s.caps.DiffLayers)
		if err == nil && r.ID != rec.ID {
			err = fmt.Errorf("commit %q: snapshot replaced concurrently: %w", key, errdefs.ErrAborted)
		}
		return err
	})
}

// Remove implements snapshot.Snapshotter. The record goes first (durably);
// the directory is then renamed to a trash name and deleted. A crash in
// between leaves an unreferenced directory for Cleanup.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	if err := s.check(); err != nil {
		return err
	}
	s.cleanMu.RLock()
	defer s.cleanMu.RUnlock()
	var rec *record
	if err := s.update(func(m *mtx) error {
		r, err := m.remove(key)
		rec = r
		return err
	}); err != nil {
		return err
	}
	dir := s.idDir(rec.ID)
	trash := filepath.Join(s.dir, trashPrefix+strconv.FormatUint(rec.ID, 10))
	if err := os.Rename(dir, trash); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithField("dir", dir).Warn("snapshot: removed snapshot had no directory")
			return nil
		}
		log.G(ctx).WithError(err).WithField("dir", dir).Warn("snapshot: directory left for Cleanup")
		return nil
	}
	if err := fsutil.RemoveAll(trash); err != nil {
		log.G(ctx).WithError(err).WithField("dir", trash).Warn("snapshot: directory left for Cleanup")
	}
	return nil
}

// Walk implements snapshot.Snapshotter. fn runs outside the metadata
// transaction, so it may call back into the snapshotter.
func (s *Snapshotter) Walk(ctx context.Context, fn func(context.Context, snapshot.Info) error) error {
	if err := s.check(); err != nil {
		return err
	}
	var infos []snapshot.Info
	err := s.view(func(m *mtx) error {
		return m.snaps.ForEach(func(k, _ []byte) error {
			r, err := m.get(string(k))
			if err != nil {
				return err
			}
			infos = append(infos, r.info(string(k)))
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// Sync implements snapshot.Snapshotter: one syncfs of the filesystem
// holding the snapshots.
func (s *Snapshotter) Sync(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	return fsutil.SyncFS(s.dir)
}

// SyncEntries implements snapshot.Snapshotter: an fsync of each listed
// entry of key's own fs directory, then of the snapshot's directory and
// of the snapshots root (its name there).
func (s *Snapshotter) SyncEntries(ctx context.Context, key string, names []string) error {
	if err := s.check(); err != nil {
		return err
	}
	rec, err := s.get(key)
	if err != nil {
		return err
	}
	dir := s.idDir(rec.ID)
	if err := fsutil.SyncEntries(ctx, filepath.Join(dir, "fs"), names); err != nil {
		return err
	}
	// The snapshot's own directory and its name, which a Prepare
	// without sync left unflushed.
	if err := fsutil.SyncDir(dir); err != nil {
		return err
	}
	return fsutil.SyncDir(s.dir)
}

// get reads key's record.
func (s *Snapshotter) get(key string) (*record, error) {
	var rec *record
	err := s.view(func(m *mtx) error {
		r, err := m.get(key)
		rec = r
		return err
	})
	return rec, err
}

// Usage implements snapshot.Snapshotter: the blocks and inodes of the
// snapshot's own fs directory, each hard-linked inode counted once.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshot.Usage, error) {
	if err := s.check(); err != nil {
		return snapshot.Usage{}, err
	}
	rec, err := s.get(key)
	if err != nil {
		return snapshot.Usage{}, err
	}
	u, err := DiskUsage(ctx, filepath.Join(s.idDir(rec.ID), "fs"))
	if errors.Is(err, os.ErrNotExist) {
		return u, fmt.Errorf("snapshot %q: %w: %w", key, errdefs.ErrNotFound, err)
	}
	return u, err
}

// DiskUsage walks dir without following symlinks and sums allocated bytes
// (st_blocks) and inodes, counting each inode once.
func DiskUsage(ctx context.Context, dir string) (snapshot.Usage, error) {
	type inode struct{ dev, ino uint64 }
	var u snapshot.Usage
	seen := make(map[inode]struct{})
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		// A running container removes files while its layer is walked:
		// what is gone takes no space.
		if err != nil {
			if p != dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		fi, err := d.Info()
		if err != nil {
			if p != dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat data", p)
		}
		k := inode{uint64(st.Dev), st.Ino}
		if _, dup := seen[k]; dup {
			return nil
		}
		seen[k] = struct{}{}
		u.Inodes++
		u.Size += st.Blocks * 512
		return nil
	})
	return u, err
}

// Cleanup implements snapshot.Snapshotter. It waits for in-flight
// creations and removals, then deletes every directory below
// <root>/snapshots that no record names (temporary "new-*", trash "rm-*"
// and orphaned ids) and lets the driver trim committed snapshots.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	s.cleanMu.Lock()
	defer s.cleanMu.Unlock()
	kinds := make(map[string]snapshot.Kind)
	if err := s.view(func(m *mtx) error {
		return m.snaps.ForEach(func(k, _ []byte) error {
			r, err := m.get(string(k))
			if err != nil {
				return err
			}
			kinds[strconv.FormatUint(r.ID, 10)] = r.Kind
			return nil
		})
	}); err != nil {
		return err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := e.Name()
		p := filepath.Join(s.dir, name)
		kind, referenced := kinds[name]
		switch {
		case referenced:
			delete(kinds, name)
			if kind == snapshot.KindCommitted {
				if err := s.drv.CleanupCommitted(ctx, p); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		case strings.HasPrefix(name, tempPrefix), strings.HasPrefix(name, trashPrefix), isID(name):
		default:
			continue // not ours (e.g. the driver marker)
		}
		log.G(ctx).WithField("dir", p).Info("snapshot cleanup: removing unreferenced directory")
		if err := fsutil.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	for id := range kinds {
		log.G(ctx).WithField("id", id).Warn("snapshot cleanup: record without directory")
	}
	return errors.Join(errs...)
}

func isID(name string) bool {
	_, err := strconv.ParseUint(name, 10, 64)
	return err == nil
}

// Close implements snapshot.Snapshotter. The metadata db belongs to the
// caller and stays open.
func (s *Snapshotter) Close() error {
	s.closed.Store(true)
	return nil
}

var _ snapshot.Snapshotter = (*Snapshotter)(nil)
