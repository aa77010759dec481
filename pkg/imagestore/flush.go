package imagestore

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/shim-cri/shim/pkg/snapshot"
)

// maxFlushEntries caps the entries one pull fsyncs one by one (each
// layer's are capped by snapshot.MaxFlushEntries); a pull with more
// flushes the whole filesystem once instead.
const maxFlushEntries = 4 * snapshot.MaxFlushEntries

// unflushedLayers are the layers committed without a flush
// (snapshot.WithoutSync), by snapshot key, each with what flushing it
// takes: the entries to fsync (snapshot.ApplyResult.Flush; of a layer
// flushed as it was unpacked, what its commit changed: none or its
// implicit directories), or nil for the whole filesystem. Whichever pull
// records an image using one first flushes it. Only this process commits layers unflushed, and start-up GC
// removes every snapshot no recorded image or container holds, so a layer
// not listed here is on disk.
type unflushedLayers struct {
	mu  sync.Mutex
	seq uint64
	m   map[string]unflushedLayer
}

type unflushedLayer struct {
	names []string
	seq   uint64 // of its last begin: a later begin is another commit of the key
	// committing counts the commits of the key running: a commit
	// writes too (snapshot.WithInheritDirs), so a flush of the whole
	// filesystem covers only the commits that ended before it started.
	committing int
	done       uint64 // when its last commit ended (0: none has)
}

// begin records a commit of key about to start, before the commit makes
// the layer visible to other pulls; end records its end.
func (u *unflushedLayers) begin(key string, names []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]unflushedLayer{}
	}
	u.seq++
	l := u.m[key]
	l.names, l.seq = names, u.seq
	l.committing++
	u.m[key] = l
}

// end records that a commit of key ended, committed or not (another pull
// committed the key first, or it failed). A key no commit of which
// succeeded is forgotten once none runs.
func (u *unflushedLayers) end(key string, committed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	l, ok := u.m[key]
	if !ok {
		return
	}
	l.committing--
	if committed {
		u.seq++
		l.done = u.seq
	}
	if l.committing == 0 && l.done == 0 {
		delete(u.m, key)
		return
	}
	u.m[key] = l
}

// forget drops key, whose snapshot GC removed.
func (u *unflushedLayers) forget(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, key)
}

// of returns the unflushed layers among keys.
func (u *unflushedLayers) of(keys []string) map[string]unflushedLayer {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]unflushedLayer{}
	for _, k := range keys {
		if l, ok := u.m[k]; ok {
			out[k] = l
		}
	}
	return out
}

// flushed forgets the layers flushed entry by entry (each committed, as
// the pull that flushed them found them), unless committed again since.
func (u *unflushedLayers) flushed(layers map[string]unflushedLayer) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, l := range layers {
		if cur := u.m[k]; cur.seq == l.seq && cur.committing == 0 {
			delete(u.m, k)
		}
	}
}

// mark is where a flush of the whole filesystem starts: flushedUpTo
// forgets every layer whose commits all ended before it.
func (u *unflushedLayers) mark() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seq
}

func (u *unflushedLayers) flushedUpTo(mark uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, l := range u.m {
		if l.committing == 0 && l.done != 0 && l.done <= mark {
			delete(u.m, k)
		}
	}
}

// flush makes every layer and blob of img durable before img is recorded:
// the layers still unflushed entry by entry, with the image's blobs, when
// each listed its entries and they are few; else the whole filesystem
// (syncfs), which also waits for every other writer's data on it. It
// says which it did.
func (s *Store) flush(ctx context.Context, img *Image) (string, error) {
	keys := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		keys[i] = l.ChainID.String()
	}
	pending := s.unflushed.of(keys)
	entries, whole := 0, false
	for _, l := range pending {
		entries += len(l.names)
		whole = whole || l.names == nil
	}
	if whole || entries > maxFlushEntries {
		mark := s.unflushed.mark()
		if err := s.sn.Sync(ctx); err != nil {
			return "", fmt.Errorf("flushing layers: %w", err)
		}
		if err := s.content.Sync(); err != nil {
			return "", fmt.Errorf("flushing blobs: %w", err)
		}
		s.unflushed.flushedUpTo(mark)
		return "the filesystem", nil
	}
	g, gctx := errgroup.WithContext(ctx)
	for k, l := range pending {
		if len(l.names) == 0 {
			continue // flushed as it was unpacked, and its commit changed nothing
		}
		g.Go(func() error {
			if err := s.sn.SyncEntries(gctx, k, l.names); err != nil {
				return fmt.Errorf("flushing layer %s: %w", k, err)
			}
			return nil
		})
	}
	blobs := s.keptBlobs(img) // the manifests and the config too (Put)
	g.Go(func() error {
		if err := s.content.SyncBlobs(blobs); err != nil {
			return fmt.Errorf("flushing blobs: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return "", err
	}
	s.unflushed.flushed(pending)
	return fmt.Sprintf("%d entries of %d layers and %d blobs", entries, len(pending), len(blobs)), nil
}
