package imagestore

import (
	"context"
	"sync"

	digest "github.com/opencontainers/go-digest"

	"github.com/shim-cri/shim/pkg/snapshot"
)

// usageCache remembers the usage of committed snapshots, which never change.
type usageCache struct {
	mu sync.Mutex
	m  map[string]snapshot.Usage // by snapshot id
}

// Usage sums the disk use of every snapshot and every blob: the image
// filesystem as ImageFsInfo reports it.
func (s *Store) Usage(ctx context.Context) (bytes, inodes int64, err error) {
	done, err := s.begin()
	if err != nil {
		return 0, 0, err
	}
	defer done()
	s.usage.mu.Lock()
	if s.usage.m == nil {
		s.usage.m = map[string]snapshot.Usage{}
	}
	s.usage.mu.Unlock()
	seen := map[string]bool{}
	err = s.sn.Walk(ctx, func(ctx context.Context, i snapshot.Info) error {
		seen[i.ID] = true
		s.usage.mu.Lock()
		u, ok := s.usage.m[i.ID]
		s.usage.mu.Unlock()
		if !ok {
			var err error
			if u, err = s.sn.Usage(ctx, i.Key); err != nil {
				return nil // removed meanwhile
			}
			if i.Kind == snapshot.KindCommitted {
				s.usage.mu.Lock()
				s.usage.m[i.ID] = u
				s.usage.mu.Unlock()
			}
		}
		bytes += u.Size
		inodes += u.Inodes
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	s.usage.mu.Lock()
	for id := range s.usage.m {
		if !seen[id] {
			delete(s.usage.m, id)
		}
	}
	s.usage.mu.Unlock()
	err = s.content.Walk(func(_ digest.Digest, size int64) error {
		bytes += size
		inodes++
		return nil
	})
	return bytes, inodes, err
}
