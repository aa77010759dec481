// Package imagestore holds images: the content store (blobs by digest), the
// image records (image -> manifest -> config and layers) in bbolt, the
// registry client, and the unpacking of layers into pkg/snapshot.
package imagestore

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/snapshot"
)

var bucketImages = []byte("images.v1")

// Config configures a Store.
type Config struct {
	ContentRoot       string // directory of the content store
	DB                *bolt.DB
	Snapshotter       snapshot.Snapshotter
	RegistryConfigDir string   // hosts.toml directory (containerd format)
	Downloads         int      // layers fetched in parallel per pull; default 4
	Unpacks           int      // layers unpacked in parallel per pull; default 2×CPUs
	Pinned            []string // references never garbage collected by kubelet
	Platform          ocispec.Platform
	// SnapshotRoots lists snapshot keys used outside images (container
	// root filesystems); GC keeps them and their parents.
	SnapshotRoots func(ctx context.Context) ([]string, error)
	// IngestExpiry is how long a partial download is kept for a resume.
	IngestExpiry time.Duration
	// MaxUnpackedLayerSize caps the uncompressed bytes of one layer;
	// default DefaultMaxUnpackedLayerSize.
	MaxUnpackedLayerSize int64
	// KeepLayerBlobs keeps layers' compressed blobs once unpacked. Without
	// it a layer streams into its snapshot unstored (drivers that unpack
	// while downloading), or its blob is dropped once the pull's layers
	// are committed.
	KeepLayerBlobs bool
}

// DefaultMaxUnpackedLayerSize is the default cap on a layer's uncompressed
// size: generous for real images, a bound on what a gzip bomb can write.
const DefaultMaxUnpackedLayerSize = 64 << 30

// Store is the image store.
type Store struct {
	cfg     Config
	content *Content
	sn      snapshot.Snapshotter
	reg     *Registry
	pinned  map[string]bool

	mu     sync.RWMutex
	images map[digest.Digest]*Image
	names  map[string]digest.Digest // repo tag or repo digest -> image id

	gcMu     sync.Mutex     // held by GC; taken briefly to register in-flight work
	inflight map[string]int // blob digests and snapshot keys a pull is using
	// dropLater holds the layer blobs a pull dropped while another pull
	// held them (dropLayerBlobs): the last release removes them.
	dropLater map[string]bool

	usage     usageCache
	unflushed unflushedLayers
	pulls     flight[*Image]
	layers    flight[struct{}]

	life   sync.Mutex     // guards closed and adding to ops
	closed bool           //
	ops    sync.WaitGroup // pulls, removals and collections running
}

// New opens the store, loads image records and removes what a crash left.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Downloads <= 0 {
		cfg.Downloads = 4
	}
	if cfg.Unpacks <= 0 {
		cfg.Unpacks = 2 * runtime.NumCPU()
	}
	if cfg.Platform.OS == "" {
		cfg.Platform = ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	if cfg.IngestExpiry == 0 {
		cfg.IngestExpiry = 24 * time.Hour
	}
	if cfg.MaxUnpackedLayerSize <= 0 {
		cfg.MaxUnpackedLayerSize = DefaultMaxUnpackedLayerSize
	}
	content, err := NewContent(cfg.ContentRoot)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:       cfg,
		content:   content,
		sn:        cfg.Snapshotter,
		reg:       NewRegistry(cfg.RegistryConfigDir),
		pinned:    map[string]bool{},
		images:    map[digest.Digest]*Image{},
		names:     map[string]digest.Digest{},
		inflight:  map[string]int{},
		dropLater: map[string]bool{},
	}
	for _, p := range cfg.Pinned {
		r, err := ParseRef(p)
		if err != nil {
			return nil, fmt.Errorf("pinned image %q: %w", p, err)
		}
		s.pinned[r.String()] = true
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	if err := s.GC(ctx); err != nil {
		return nil, fmt.Errorf("start-up cleanup: %w", err)
	}
	if n, err := content.CleanIngest(cfg.IngestExpiry); err != nil {
		log.G(ctx).WithError(err).Warn("cleaning partial downloads")
	} else if n > 0 {
		log.G(ctx).Infof("removed %d expired partial downloads", n)
	}
	return s, nil
}

// begin registers an operation that Close waits for; it fails once the
// store is closed.
func (s *Store) begin() (func(), error) {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil, fmt.Errorf("the image store is closed: %w", errdefs.ErrUnavailable)
	}
	s.ops.Add(1)
	return s.ops.Done, nil
}

// Close refuses new pulls, removals and collections and waits for the
// running ones (the background collection after a pull included), so
// nothing touches the database or the snapshotter after it returns. The
// caller closes those.
func (s *Store) Close() error {
	s.life.Lock()
	s.closed = true
	s.life.Unlock()
	s.ops.Wait()
	s.reg.closeIdle()
	return nil
}

// Content is the store's content store.
func (s *Store) Content() *Content { return s.content }

// Snapshotter is the store's snapshotter.
func (s *Store) Snapshotter() snapshot.Snapshotter { return s.sn }

func (s *Store) load() error {
	return s.cfg.DB.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketImages)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var img Image
			if err := json.Unmarshal(v, &img); err != nil {
				return fmt.Errorf("image record %s: %w: %w", k, err, errdefs.ErrDataLoss)
			}
			s.index(&img)
			return nil
		})
	})
}

func (s *Store) index(img *Image) {
	s.images[img.ID] = img
	for _, n := range img.RepoTags {
		s.names[n] = img.ID
	}
	for _, n := range img.RepoDigests {
		s.names[n] = img.ID
	}
}

func (s *Store) unindex(img *Image) {
	delete(s.images, img.ID)
	for _, n := range append(slices.Clone(img.RepoTags), img.RepoDigests...) {
		if s.names[n] == img.ID {
			delete(s.names, n)
		}
	}
}

// Get finds an image by id ("sha256:...", or its 64 hex digits), by tag or
// repo@digest reference. ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	kind, key, err := parseLookup(ref)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	img := s.lookup(kind, key)
	if img == nil {
		return nil, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return clone(img), nil
}

// lookup finds a parsed reference (parseLookup) in the index; s.mu held.
func (s *Store) lookup(kind lookupKind, key string) *Image {
	if kind == lookupID {
		return s.images[digest.Digest(key)]
	}
	if id, ok := s.names[key]; ok {
		return s.images[id]
	}
	return nil
}

// List returns every image, ordered by id.
func (s *Store) List(ctx context.Context) []*Image {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Image, 0, len(s.images))
	for _, img := range s.images {
		out = append(out, clone(img))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Pinned says whether kubelet must never remove img.
func (s *Store) Pinned(img *Image) bool {
	for _, t := range img.RepoTags {
		if s.pinned[t] {
			return true
		}
	}
	for _, d := range img.RepoDigests {
		if s.pinned[d] {
			return true
		}
	}
	return false
}

// Remove deletes the image that ref names, with all its tags and digests,
// then collects the content and snapshots nobody else uses. Removing an
// image that does not exist succeeds.
func (s *Store) Remove(ctx context.Context, ref string) error {
	kind, key, err := parseLookup(ref)
	if err != nil {
		return err
	}
	done, err := s.begin()
	if err != nil {
		return err
	}
	defer done()
	s.mu.Lock()
	img := s.lookup(kind, key)
	if img == nil {
		s.mu.Unlock()
		return nil
	}
	err = s.cfg.DB.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketImages).Delete([]byte(img.ID))
	})
	if err == nil {
		s.unindex(img)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	log.G(ctx).WithField(log.FieldImage, img.ID).Infof("removed image %v", append(img.RepoTags, img.RepoDigests...))
	// The image is gone; what GC cannot collect now it collects later.
	if err := s.GC(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("collecting after removing an image")
	}
	return nil
}

// commit records img under name (a tag, or repo@digest when the pull was by
// digest) plus repoDigest. A name that pointed at another image moves to
// this one; an image left without names is deleted.
func (s *Store) commit(ctx context.Context, img *Image, tag, repoDigest string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.images[img.ID]
	if cur == nil {
		cur = img
	} else {
		cur = clone(cur)
	}
	var orphans []*Image
	changed := map[digest.Digest]*Image{}
	take := func(name string, list *[]string) {
		if name == "" {
			return
		}
		if prev, ok := s.names[name]; ok && prev != img.ID {
			p := changed[prev]
			if p == nil {
				p = clone(s.images[prev])
				changed[prev] = p
			}
			p.RepoTags = slices.DeleteFunc(p.RepoTags, func(n string) bool { return n == name })
			p.RepoDigests = slices.DeleteFunc(p.RepoDigests, func(n string) bool { return n == name })
		}
		if !slices.Contains(*list, name) {
			*list = append(*list, name)
		}
	}
	take(tag, &cur.RepoTags)
	take(repoDigest, &cur.RepoDigests)
	sort.Strings(cur.RepoTags)
	sort.Strings(cur.RepoDigests)
	cur.Pulled = img.Pulled
	for _, p := range changed {
		if len(p.RepoTags) == 0 && len(p.RepoDigests) == 0 {
			orphans = append(orphans, p)
		}
	}
	err := s.cfg.DB.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketImages)
		for id, p := range changed {
			if len(p.RepoTags) == 0 && len(p.RepoDigests) == 0 {
				if err := b.Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			if err := putImage(b, p); err != nil {
				return err
			}
		}
		return putImage(b, cur)
	})
	if err != nil {
		return nil, err
	}
	for id, p := range changed {
		s.unindex(s.images[id])
		if len(p.RepoTags) > 0 || len(p.RepoDigests) > 0 {
			s.index(p)
		}
	}
	s.index(cur)
	if len(orphans) > 0 {
		// commit runs inside a pull, which holds the store open.
		done, err := s.begin()
		if err == nil {
			go func() {
				defer done()
				if err := s.GC(context.WithoutCancel(ctx)); err != nil {
					log.G(ctx).WithError(err).Warn("collecting replaced images")
				}
			}()
		}
	}
	return clone(cur), nil
}

func putImage(b *bolt.Bucket, img *Image) error {
	data, err := json.Marshal(img)
	if err != nil {
		return err
	}
	return b.Put([]byte(img.ID), data)
}

// hold registers keys (blob digests, snapshot keys) as in use by a pull so
// GC leaves them alone; the returned func releases them, and removes the
// blobs left to the last release (dropLater).
func (s *Store) hold(keys ...string) func() {
	s.gcMu.Lock()
	for _, k := range keys {
		s.inflight[k]++
	}
	s.gcMu.Unlock()
	return func() {
		s.gcMu.Lock()
		defer s.gcMu.Unlock()
		for _, k := range keys {
			if s.inflight[k]--; s.inflight[k] > 0 {
				continue
			}
			delete(s.inflight, k)
			if s.dropLater[k] {
				delete(s.dropLater, k)
				if err := s.content.Delete(digest.Digest(k)); err != nil {
					log.G(context.Background()).WithError(err).Warnf("removing the blob of unpacked layer %s", k)
				}
			}
		}
	}
}
