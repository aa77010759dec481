package imagestore

import (
	"context"
	"fmt"
	"sync"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/shim-cri/shim/pkg/snapshot"
)

// maxFlushEntries caps the entries one pull fsyncs one by one (each
// layer's are capped by snapshot.MaxFlushEntries); a pull with more
// flushes the whole filesystem once instead.
const maxFlushEntries = 4 * snapshot.MaxFlushEntries

// unflushedLayers are the layers committed without a flush
// (snapshot.WithoutSync), by snapshot key, each with what flushing it
// takes: the entries to fsync (snapshot.ApplyResult.Flush), or nil for the
// whole filesystem. Whichever pull records an image using one first
// flushes it. Only this process commits layers unflushed, and start-up GC
// removes every snapshot no recorded image or container holds, so a layer
// not listed here is on disk.
type unflushedLayers struct {
	mu  sync.Mutex
	seq uint64
	m   map[string]unflushedLayer
}

type unflushedLayer struct {
	names []string
	seq   uint64 // when it was added: a later add is another commit of the key
}

// add records the unflushed layer key, before its commit makes it visible.
func (u *unflushedLayers) add(key string, names []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]unflushedLayer{}
	}
	u.seq++
	u.m[key] = unflushedLayer{names: names, seq: u.seq}
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

// flushed forgets the layers flushed, unless committed again since.
func (u *unflushedLayers) flushed(layers map[string]unflushedLayer) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, l := range layers {
		if u.m[k].seq == l.seq {
			delete(u.m, k)
		}
	}
}

// mark is where a flush of the whole filesystem starts: flushedUpTo
// forgets every layer added before it.
func (u *unflushedLayers) mark() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seq
}

func (u *unflushedLayers) flushedUpTo(mark uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, l := range u.m {
		if l.seq <= mark {
			delete(u.m, k)
		}
	}
}

// flush makes every layer and blob of img durable before img is recorded:
// the layers still unflushed entry by entry, with the layer blobs, when
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
		g.Go(func() error {
			if err := s.sn.SyncEntries(gctx, k, l.names); err != nil {
				return fmt.Errorf("flushing layer %s: %w", k, err)
			}
			return nil
		})
	}
	blobs := make([]digest.Digest, len(img.Layers))
	for i, l := range img.Layers {
		blobs[i] = l.Digest
	}
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
