package imagestore

import (
	"context"
	"fmt"
	"strings"

	digest "github.com/opencontainers/go-digest"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// extractPrefix names the active snapshots a pull unpacks layers into.
const extractPrefix = "extract-"

// GC removes blobs no image references and snapshots no image or
// container uses, apart from what running pulls hold.
func (s *Store) GC(ctx context.Context) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()

	blobs := map[digest.Digest]bool{}
	snaps := map[string]bool{}
	s.mu.RLock()
	for _, img := range s.images {
		for _, b := range s.keptBlobs(img) {
			blobs[b] = true
		}
		for _, l := range img.Layers {
			snaps[l.ChainID.String()] = true
		}
	}
	s.mu.RUnlock()
	if s.cfg.SnapshotRoots != nil {
		roots, err := s.cfg.SnapshotRoots(ctx)
		if err != nil {
			return fmt.Errorf("listing container snapshots: %w", err)
		}
		for _, r := range roots {
			snaps[r] = true
		}
	}
	for k := range s.inflight {
		blobs[digest.Digest(k)] = true
		snaps[k] = true
	}

	removedBlobs := 0
	err := s.content.Walk(func(d digest.Digest, _ int64) error {
		if blobs[d] {
			return nil
		}
		if err := s.content.Delete(d); err != nil {
			return err
		}
		removedBlobs++
		return nil
	})
	if err != nil {
		return err
	}
	removedSnaps, err := s.gcSnapshots(ctx, snaps)
	if _, cerr := s.content.CleanIngest(s.cfg.IngestExpiry); cerr != nil {
		log.G(ctx).WithError(cerr).Warn("cleaning partial downloads")
	}
	if removedBlobs+removedSnaps > 0 {
		log.G(ctx).Infof("gc: removed %d blobs and %d snapshots", removedBlobs, removedSnaps)
	}
	return err
}

// keptBlobs lists the blobs of img the content store keeps: all of them
// with KeepLayerBlobs, else its manifests and config.
func (s *Store) keptBlobs(img *Image) []digest.Digest {
	b := img.Blobs()
	if !s.cfg.KeepLayerBlobs {
		b = b[:len(b)-len(img.Layers)]
	}
	return b
}

// dropLayerBlobs removes the blobs of img's layers (all committed) unless
// the content store keeps them. One another pull holds too (more holds than
// the pull's own, one per position of the blob) goes with the last hold.
func (s *Store) dropLayerBlobs(ctx context.Context, img *Image) {
	if s.cfg.KeepLayerBlobs {
		return
	}
	own := map[digest.Digest]int{} // the pull's own holds (pull): its layers' blobs and chain IDs
	for _, l := range img.Layers {
		own[l.Digest]++
	}
	for _, l := range img.Layers {
		if _, ok := own[l.ChainID]; ok {
			own[l.ChainID]++ // an uncompressed first layer: its blob digest is its chain ID
		}
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	for d, n := range own {
		if s.inflight[d.String()] > n {
			s.dropLater[d.String()] = true
			continue
		}
		delete(s.dropLater, d.String())
		if err := s.content.Delete(d); err != nil {
			log.G(ctx).WithError(err).Warnf("removing the blob of unpacked layer %s", d)
		}
	}
}

// gcSnapshots removes unused snapshots, leaves first, until none is left
// to remove. Parents of kept snapshots are kept.
func (s *Store) gcSnapshots(ctx context.Context, keep map[string]bool) (int, error) {
	removed := 0
	for {
		var infos []snapshot.Info
		if err := s.sn.Walk(ctx, func(_ context.Context, i snapshot.Info) error {
			infos = append(infos, i)
			return nil
		}); err != nil {
			return removed, err
		}
		parents := map[string]bool{}
		for _, i := range infos {
			if i.Parent != "" {
				parents[i.Parent] = true
			}
		}
		progress := false
		for _, i := range infos {
			if keep[i.Key] || parents[i.Key] {
				continue
			}
			if i.Kind != snapshot.KindCommitted && !strings.HasPrefix(i.Key, extractPrefix) {
				continue // a container's snapshot: its owner removes it
			}
			if err := s.sn.Remove(ctx, i.Key); err != nil {
				if errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
					continue // gone, or a child appeared meanwhile
				}
				return removed, fmt.Errorf("removing snapshot %s: %w", i.Key, err)
			}
			// No pull holds it (nor can start to while GC runs): a
			// layer committed by a pull that failed later.
			s.unflushed.forget(i.Key)
			removed++
			progress = true
		}
		if !progress {
			break
		}
	}
	if err := s.sn.Cleanup(ctx); err != nil {
		return removed, err
	}
	return removed, nil
}
