package imagestore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// Progress receives a line per pull step; may be nil.
type Progress func(format string, args ...any)

// Pull resolves ref, fetches what is missing and unpacks its layers, then
// records the image. Concurrent pulls of the same reference share one pull.
func (s *Store) Pull(ctx context.Context, refStr string, auth *Auth, progress Progress) (*Image, error) {
	ref, err := ParseRef(refStr)
	if err != nil {
		return nil, err
	}
	if err := auth.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string, ...any) {}
	}
	done, err := s.begin()
	if err != nil {
		return nil, err
	}
	defer done()
	key := ref.String()
	if auth != nil {
		// Different credentials must not share a pull.
		key += "\x00" + digest.FromString(auth.Username+"\x00"+auth.Password+"\x00"+auth.Auth+"\x00"+auth.IdentityToken+"\x00"+auth.RegistryToken+"\x00"+auth.ServerAddress).String()
	}
	return s.pulls.do(ctx, key, func(ctx context.Context) (*Image, error) {
		img, err := s.pull(ctx, ref, auth, progress)
		if err != nil {
			// Collect what the failed pull committed (blobs, layers of
			// other branches) so a failure leaves nothing behind.
			if gerr := s.GC(context.WithoutCancel(ctx)); gerr != nil {
				log.G(ctx).WithError(gerr).Warn("collecting after a failed pull")
			}
		}
		return img, err
	})
}

func (s *Store) pull(ctx context.Context, ref Ref, auth *Auth, progress Progress) (*Image, error) {
	start := time.Now()
	ctx = log.WithFields(ctx, map[string]any{log.FieldImage: ref.String()})
	sess, err := s.reg.session(ref, auth)
	if err != nil {
		return nil, err
	}
	top, err := sess.manifest(ctx, ref.Object(), ref.Digest(), 0)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	progress("resolved %s to %s (%s) via %s", ref, top.digest, top.mediaType, sess.eps[sess.first].URL())

	img := &Image{Pulled: time.Now().UTC()}
	man, mt, err := s.platformManifest(ctx, sess, top, img, progress)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	var m ocispec.Manifest
	if err := strictJSON(man.body, &m); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", ref, man.digest, err)
	}
	if err := validateManifest(&m); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", ref, man.digest, err)
	}
	img.Manifest = ocispec.Descriptor{MediaType: mt, Digest: man.digest, Size: int64(len(man.body))}
	img.ConfigDesc = m.Config

	keys := []string{top.digest.String(), man.digest.String(), m.Config.Digest.String()}
	for _, l := range m.Layers {
		keys = append(keys, l.Digest.String())
	}
	release := s.hold(keys...)
	defer release()

	cfgBytes, err := s.fetchSmall(ctx, sess, m.Config, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", ref, m.Config.Digest, err)
	}
	var cfg ocispec.Image
	if err := strictJSON(cfgBytes, &cfg); err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", ref, m.Config.Digest, err)
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%s: config %s lists %d diff IDs of type %q for %d layers: %w",
			ref, m.Config.Digest, len(cfg.RootFS.DiffIDs), cfg.RootFS.Type, len(m.Layers), errdefs.ErrFailedPrecondition)
	}
	img.ID = m.Config.Digest
	img.Config = cfg.Config
	img.Platform = cfg.Platform
	img.Created = cfg.Created
	chains := chainIDs(cfg.RootFS.DiffIDs)
	size := img.Manifest.Size + m.Config.Size
	if img.Index != nil {
		size += img.Index.Size
	}
	for i, l := range m.Layers {
		if err := cfg.RootFS.DiffIDs[i].Validate(); err != nil {
			return nil, fmt.Errorf("%s: diff ID %d: %w: %w", ref, i, err, errdefs.ErrFailedPrecondition)
		}
		img.Layers = append(img.Layers, Layer{Descriptor: l, DiffID: cfg.RootFS.DiffIDs[i], ChainID: chains[i]})
		size += l.Size
	}
	img.Size = size
	chainKeys := make([]string, len(chains))
	for i, c := range chains {
		chainKeys[i] = c.String()
	}
	defer s.hold(chainKeys...)()

	if err := s.fetchLayers(ctx, sess, img, progress); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	// Blobs the layers were unpacked from (the native driver downloads
	// them first; earlier pulls may have kept them) are dropped before the
	// flush, which need not make them durable.
	s.dropLayerBlobs(ctx, img)
	if err := s.storeManifests(ctx, img, []fetched{top, man, {body: cfgBytes, digest: m.Config.Digest}}, progress); err != nil {
		return nil, err
	}
	tag, repoDigest := "", ref.WithDigest(top.digest)
	if ref.Tag() != "" {
		tag = ref.String()
	}
	out, err := s.commit(ctx, img, tag, repoDigest)
	if err != nil {
		return nil, err
	}
	log.G(ctx).WithField("id", img.ID).Infof("pulled %s: %d layers, %d bytes in %s", ref, len(img.Layers), img.Size, time.Since(start).Round(time.Millisecond))
	return out, nil
}

// platformManifest returns the image manifest of top and its media type:
// top itself, or for an index the entry for this platform (recorded in
// img.Index).
func (s *Store) platformManifest(ctx context.Context, sess *session, top fetched, img *Image, progress Progress) (fetched, string, error) {
	mt, err := detectMediaType(top)
	if err != nil {
		return fetched{}, "", err
	}
	if mt != ocispec.MediaTypeImageIndex && mt != mediaTypeDockerManifestList {
		return top, mt, nil
	}
	desc, err := s.choosePlatform(top.body)
	if err != nil {
		return fetched{}, "", err
	}
	img.Index = &ocispec.Descriptor{MediaType: mt, Digest: top.digest, Size: int64(len(top.body))}
	man, err := sess.manifest(ctx, desc.Digest.String(), desc.Digest, desc.Size)
	if err != nil {
		return fetched{}, "", fmt.Errorf("manifest for %s: %w", platformString(*desc.Platform), err)
	}
	if mt, err = detectMediaType(man); err != nil {
		return fetched{}, "", err
	}
	if mt != ocispec.MediaTypeImageManifest && mt != mediaTypeDockerManifest {
		return fetched{}, "", fmt.Errorf("index entry %s is a %s, not an image manifest: %w", desc.Digest, mt, errdefs.ErrFailedPrecondition)
	}
	progress("chose %s manifest %s", platformString(*desc.Platform), desc.Digest)
	return man, mt, nil
}

// storeManifests writes the pull's manifests and config (blobs: the index, only
// when img has one, then the manifest and the config) and flushes every
// blob and layer of the pull to disk. They go last, after the layers: a
// crash before this leaves no half image, and an image on record has all
// its data on disk.
func (s *Store) storeManifests(ctx context.Context, img *Image, blobs []fetched, progress Progress) error {
	if img.Index == nil {
		blobs = blobs[1:]
	}
	for _, b := range blobs {
		if err := s.content.Put(b.digest, b.body); err != nil {
			return err
		}
	}
	syncStart := time.Now()
	what, err := s.flush(ctx, img)
	if err != nil {
		return err
	}
	progress("flushed to disk in %s: %s", time.Since(syncStart).Round(time.Millisecond), what)
	return nil
}

// fetchSmall gets a small blob (a config) from the content store or the
// registry, verified and capped.
func (s *Store) fetchSmall(ctx context.Context, sess *session, d ocispec.Descriptor, max int64) ([]byte, error) {
	if d.Size > max {
		return nil, fmt.Errorf("size %d is over the %d byte cap: %w", d.Size, max, errdefs.ErrFailedPrecondition)
	}
	if b, err := s.content.ReadAll(d.Digest, max); err == nil {
		return b, nil
	}
	body, _, err := sess.blob(ctx, d.Digest, 0, d.Size)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := readCapped(body, max)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("got %d bytes, descriptor says %d: %w", len(b), d.Size, errdefs.ErrFailedPrecondition)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return nil, fmt.Errorf("content has digest %s: %w", got, errdefs.ErrFailedPrecondition)
	}
	return b, nil
}

// detectMediaType takes the media type from the document, falling back to
// the Content-Type header, and checks it is one shim pulls.
func detectMediaType(f fetched) (string, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
		Layers        json.RawMessage `json:"layers"`
		FSLayers      json.RawMessage `json:"fsLayers"`
	}
	if err := json.Unmarshal(f.body, &probe); err != nil {
		return "", fmt.Errorf("manifest %s is not valid JSON: %w: %w", f.digest, err, errdefs.ErrFailedPrecondition)
	}
	mt := probe.MediaType
	if mt == "" {
		mt = f.mediaType
	}
	if mt == "" || mt == "application/json" || mt == "application/octet-stream" {
		switch {
		case probe.Manifests != nil:
			mt = ocispec.MediaTypeImageIndex
		case probe.Config != nil:
			mt = ocispec.MediaTypeImageManifest
		}
	}
	switch mt {
	case ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, mediaTypeDockerManifest, mediaTypeDockerManifestList:
		if probe.SchemaVersion != 2 {
			return "", fmt.Errorf("manifest %s has schemaVersion %d, want 2: %w", f.digest, probe.SchemaVersion, errdefs.ErrFailedPrecondition)
		}
		isIndex := mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerManifestList
		if isIndex && probe.Manifests == nil || !isIndex && probe.Config == nil {
			return "", fmt.Errorf("manifest %s does not match its media type %s: %w", f.digest, mt, errdefs.ErrFailedPrecondition)
		}
		return mt, nil
	case mediaTypeDockerSchema1, "application/vnd.docker.distribution.manifest.v1+json":
		return "", fmt.Errorf("manifest %s is Docker schema 1, which is deprecated and not supported: %w", f.digest, errdefs.ErrFailedPrecondition)
	}
	return "", fmt.Errorf("manifest %s has unsupported media type %q: %w", f.digest, mt, errdefs.ErrFailedPrecondition)
}

func strictJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("malformed JSON: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func validateManifest(m *ocispec.Manifest) error {
	switch m.Config.MediaType {
	case ocispec.MediaTypeImageConfig, mediaTypeDockerConfig:
	default:
		return fmt.Errorf("config media type %q is not an image config: %w", m.Config.MediaType, errdefs.ErrFailedPrecondition)
	}
	if err := m.Config.Digest.Validate(); err != nil {
		return fmt.Errorf("config digest: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	if len(m.Layers) > 1024 {
		return fmt.Errorf("%d layers is more than 1024: %w", len(m.Layers), errdefs.ErrFailedPrecondition)
	}
	for i, l := range m.Layers {
		if err := l.Digest.Validate(); err != nil {
			return fmt.Errorf("layer %d digest: %w: %w", i, err, errdefs.ErrFailedPrecondition)
		}
		if l.Size < 0 {
			return fmt.Errorf("layer %d has negative size: %w", i, errdefs.ErrFailedPrecondition)
		}
		if _, err := decompressorFor(l.MediaType); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return nil
}

// choosePlatform picks the best manifest of an index for the store's
// platform: exact variant first, then no variant, then any variant.
func (s *Store) choosePlatform(body []byte) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := strictJSON(body, &idx); err != nil {
		return ocispec.Descriptor{}, err
	}
	want := s.cfg.Platform
	best, bestScore := -1, 0
	for i, d := range idx.Manifests {
		if d.Platform == nil || d.Platform.OS != want.OS || d.Platform.Architecture != want.Architecture {
			continue
		}
		score := 1
		switch {
		case d.Platform.Variant == want.Variant:
			score = 3
		case d.Platform.Variant == "" || want.Variant == "":
			score = 2
		}
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		var have []string
		for _, d := range idx.Manifests {
			if d.Platform != nil {
				have = append(have, platformString(*d.Platform))
			}
		}
		return ocispec.Descriptor{}, fmt.Errorf("no manifest for %s (index has %s): %w",
			platformString(want), strings.Join(have, ", "), errdefs.ErrNotFound)
	}
	d := idx.Manifests[best]
	if err := d.Digest.Validate(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index entry digest: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return d, nil
}

func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
