package imagestore

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// fetchLayers makes sure every layer of img is in the content store and
// committed as a snapshot keyed by its chain ID. Layers download in
// parallel; on drivers that keep layers as diffs each one is unpacked
// while it downloads, into its own snapshot, and the snapshots are
// committed in order as their parents are.
func (s *Store) fetchLayers(ctx context.Context, sess *session, img *Image, progress Progress) error {
	p := &layerPull{
		s:        s,
		sess:     sess,
		img:      img,
		progress: progress,
		dl:       make(chan struct{}, s.cfg.Downloads),
		unpack:   make(chan struct{}, s.cfg.Unpacks),
		caps:     s.sn.Capabilities(),
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := range img.Layers {
		g.Go(func() error {
			if !p.caps.DiffLayers && (s.cfg.KeepLayerBlobs || !p.committed(gctx, img.Layers[i].ChainID.String())) {
				// Download everything in parallel; unpacking follows the chain.
				if err := p.ensureBlob(gctx, i); err != nil {
					return err
				}
			}
			return p.ensureLayer(gctx, i)
		})
	}
	return g.Wait()
}

type layerPull struct {
	s        *Store
	sess     *session
	img      *Image
	progress Progress
	dl       chan struct{} // download slots
	unpack   chan struct{} // unpack slots (unpacking from a local blob)
	caps     snapshot.Capabilities
	// earlyFlushes counts the entries of the layers that asked to be
	// flushed as they were unpacked: those past maxFlushEntries are not.
	earlyFlushes atomic.Int64
}

func acquire(ctx context.Context, sem chan struct{}) (func(), error) {
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *layerPull) committed(ctx context.Context, key string) bool {
	info, err := p.s.sn.Stat(ctx, key)
	return err == nil && info.Kind == snapshot.KindCommitted
}

func (p *layerPull) hasBlob(l Layer) bool {
	size, err := p.s.content.Size(l.Digest)
	return err == nil && size == l.Size
}

// ensureLayer makes layer i (and so its parents) a committed snapshot.
func (p *layerPull) ensureLayer(ctx context.Context, i int) error {
	l := p.img.Layers[i]
	key := l.ChainID.String()
	if p.committed(ctx, key) && (!p.s.cfg.KeepLayerBlobs || p.hasBlob(l)) {
		return nil
	}
	_, err := p.s.layers.do(ctx, key, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, p.doLayer(ctx, i)
	})
	return err
}

func (p *layerPull) parentKey(i int) string {
	if i == 0 {
		return ""
	}
	return p.img.Layers[i-1].ChainID.String()
}

func (p *layerPull) doLayer(ctx context.Context, i int) error {
	l := p.img.Layers[i]
	key := l.ChainID.String()
	if p.committed(ctx, key) {
		if !p.s.cfg.KeepLayerBlobs {
			return nil
		}
		return p.ensureBlob(ctx, i)
	}
	parent := p.parentKey(i)
	if !p.caps.DiffLayers {
		if i > 0 {
			if err := p.ensureLayer(ctx, i-1); err != nil {
				return err
			}
		}
		// Unpacked from its blob: fetchLayers downloads it, and a child
		// that comes here first waits for that download.
		if err := p.ensureBlob(ctx, i); err != nil {
			return err
		}
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			log.G(ctx).WithError(err).Warnf("layer %s: retrying (attempt %d)", l.Digest, attempt+1)
			select {
			case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		err = p.unpackLayer(ctx, i, parent)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	return err
}

func retryable(err error) bool {
	return errdefs.Is(err, errdefs.ErrUnavailable) || errors.Is(err, errResumeBad)
}

// unpackLayer applies layer i into a new active snapshot and commits it.
func (p *layerPull) unpackLayer(ctx context.Context, i int, parent string) (retErr error) {
	start := time.Now()
	l := p.img.Layers[i]
	key := l.ChainID.String()
	active := extractPrefix + randomID() + "-" + l.ChainID.Encoded()[:12]
	defer p.s.hold(active)()

	prepParent := parent
	if p.caps.DiffLayers {
		prepParent = ""
	}
	// Not flushed: a crash before the image is recorded leaves the
	// snapshot to start-up GC, and the layer's flush covers it.
	mounts, err := p.s.sn.Prepare(ctx, active, prepParent, snapshot.WithoutSync())
	if err != nil {
		return fmt.Errorf("layer %s: prepare: %w", l.Digest, err)
	}
	defer func() {
		if retErr != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := p.s.sn.Remove(rctx, active); err != nil && !errdefs.IsNotFound(err) {
				log.G(ctx).WithError(err).Warnf("removing snapshot %s", active)
			}
		}
	}()
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		return fmt.Errorf("layer %s: snapshotter gave %d mounts to unpack into, want one bind: %w",
			l.Digest, len(mounts), errdefs.ErrInternal)
	}
	dir := mounts[0].Source

	src, finish, err := p.layerSource(ctx, l)
	if err != nil {
		return err
	}
	res, err := applyCompressed(ctx, dir, src, l, p.caps.Whiteouts, p.s.cfg.MaxUnpackedLayerSize)
	if ferr := finish(err); ferr != nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	n, implicit := res.Bytes, res.Implicit
	unpacked := time.Since(start)
	// Flushed now, while other layers still download, rather than
	// all at the end: a flush costs in proportion to what was written
	// since the last one, so the pull's last flush is left little (the
	// commit's changes, the last layer). No more than maxFlushEntries
	// entries a pull, one fsync each; the layers past that are left to
	// the last flush (which flushes the filesystem when they are many).
	flushedEarly := p.caps.DiffLayers && res.Flush != nil && p.earlyFlushes.Add(int64(len(res.Flush))) <= maxFlushEntries
	if flushedEarly {
		if err := p.s.sn.SyncEntries(ctx, active, res.Flush); err != nil {
			return fmt.Errorf("layer %s: flushing: %w", l.Digest, err)
		}
	}

	if p.caps.DiffLayers && i > 0 {
		if err := p.ensureLayer(ctx, i-1); err != nil {
			return err
		}
	}
	// Flushed before an image using it is recorded (Store.flush).
	opts := []snapshot.Opt{snapshot.WithoutSync()}
	if p.caps.DiffLayers && parent != "" {
		// Unpacked alone, the layer's implicit directories must look as
		// they do in the parent chain.
		opts = append(opts, snapshot.WithParent(parent), snapshot.WithInheritDirs(implicit))
	}
	// Recorded before the commit makes the layer visible to other pulls:
	// whichever records an image using it first flushes it (flush).
	flushNames := res.Flush
	switch {
	case !p.caps.DiffLayers:
		flushNames = nil // the parent's copy is this snapshot's too
	case flushedEarly:
		// Flushed when unpacked (above): left is what the commit
		// changes, the implicit directories it gives the parent's
		// attributes.
		flushNames = []string{}
		if parent != "" {
			flushNames = append(flushNames, implicit...)
		}
	}
	p.s.unflushed.begin(key, flushNames)
	err = p.s.sn.Commit(ctx, key, active, opts...)
	p.s.unflushed.end(key, err == nil)
	if err != nil {
		if errdefs.IsAlreadyExists(err) && p.committed(ctx, key) {
			// Committed meanwhile by another pull: use that one.
			if rerr := p.s.sn.Remove(ctx, active); rerr != nil && !errdefs.IsNotFound(rerr) {
				log.G(ctx).WithError(rerr).Warnf("removing snapshot %s", active)
			}
			return nil
		}
		return fmt.Errorf("layer %s: commit: %w", l.Digest, err)
	}
	p.progress("layer %d/%d %s: %d bytes, %d bytes unpacked in %s, committed after %s",
		i+1, len(p.img.Layers), l.Digest.Encoded()[:12], l.Size, n, unpacked.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return nil
}

// layerSource opens layer l: from the content store if it is there, else
// streaming from the registry, through an ingest that stores it with
// KeepLayerBlobs (streamSource without). finish commits the download (or
// keeps the partial data on error).
func (p *layerPull) layerSource(ctx context.Context, l Layer) (io.Reader, func(error) error, error) {
	if p.hasBlob(l) {
		release, err := acquire(ctx, p.unpack)
		if err != nil {
			return nil, nil, err
		}
		f, err := p.s.content.Open(l.Digest)
		if err != nil {
			release()
			return nil, nil, err
		}
		return f, func(error) error { release(); return f.Close() }, nil
	}
	if !p.s.cfg.KeepLayerBlobs {
		return p.streamSource(ctx, l)
	}
	release, err := acquire(ctx, p.dl)
	if err != nil {
		return nil, nil, err
	}
	w, err := p.s.content.NewIngest(l.Digest, l.Size)
	if errdefs.IsUnavailable(err) {
		// Someone else is writing it (another position of the same blob,
		// another pull): wait for them, then read it or take over.
		release()
		if err := p.s.content.WaitIngest(ctx, l.Digest); err != nil {
			return nil, nil, err
		}
		return p.layerSource(ctx, l)
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	body, start, err := p.sess.blob(ctx, l.Digest, w.Offset(), l.Size)
	if err != nil {
		w.Close()
		release()
		return nil, nil, err
	}
	var r io.Reader
	if start == 0 {
		if err := w.Reset(); err != nil {
			body.Close()
			w.Close()
			release()
			return nil, nil, err
		}
		r = io.TeeReader(body, w)
	} else {
		r = io.MultiReader(w.Existing(), io.TeeReader(body, w))
	}
	finish := func(applyErr error) error {
		defer release()
		defer body.Close()
		if applyErr == nil {
			return w.CommitUnsynced()
		}
		if unpackStopped(ctx, applyErr) {
			w.Close() // keep what arrived, for a resume
			return applyErr
		}
		// Unpacking failed: read the rest of the blob (no more than its
		// size: the ingest refuses more) to learn whether the download
		// itself was bad (truncated, wrong digest: a bomb in place of the
		// layer) or the layer.
		if _, err := io.Copy(io.Discard, io.LimitReader(r, l.Size+1)); err != nil {
			if errdefs.IsFailedPrecondition(err) { // more data than its size: bad, not broken
				w.Discard()
				return badDownload(ctx, l, applyErr, err)
			}
			w.Close()
			return fmt.Errorf("%v (download: %v): %w", applyErr, err, errdefs.ErrUnavailable)
		}
		if err := w.Commit(); err != nil {
			err = badDownload(ctx, l, applyErr, err)
			if start > 0 {
				// The resumed partial data was bad; it is gone now.
				return fmt.Errorf("resumed download failed its check: %w: %w", err, errResumeBad)
			}
			return err
		}
		return applyErr
	}
	return r, finish, nil
}

// streamSource reads layer l from the registry without storing it: its
// size and digest are checked as it is read, and finish checks the end.
// A failed download starts again from its first byte.
func (p *layerPull) streamSource(ctx context.Context, l Layer) (io.Reader, func(error) error, error) {
	release, err := acquire(ctx, p.dl)
	if err != nil {
		return nil, nil, err
	}
	body, _, err := p.sess.blob(ctx, l.Digest, 0, l.Size)
	if err != nil {
		release()
		return nil, nil, err
	}
	r := &checkedReader{blobCheck: newBlobCheck(l.Digest, l.Size), r: body}
	finish := func(applyErr error) error {
		defer release()
		defer body.Close()
		if applyErr != nil && unpackStopped(ctx, applyErr) {
			return applyErr
		}
		// Read what the unpack left (after a failed one: to learn whether
		// the download itself was bad, as layerSource does), then check
		// the whole blob.
		_, err := io.Copy(io.Discard, r)
		switch {
		case err == nil:
			err = r.verify()
		case errdefs.IsFailedPrecondition(err): // longer than its size
		case applyErr != nil:
			return fmt.Errorf("%v (download: %v): %w", applyErr, err, errdefs.ErrUnavailable)
		default:
			return fmt.Errorf("layer %s: reading its end: %w: %w", l.Digest, err, errdefs.ErrUnavailable)
		}
		if err != nil {
			if applyErr != nil {
				return badDownload(ctx, l, applyErr, err)
			}
			return err
		}
		return applyErr
	}
	return r, finish, nil
}

// unpackStopped reports whether the unpack failed for a reason the rest of
// the download cannot explain (the caller went away, the disk filled up):
// the download is then not read further.
func unpackStopped(ctx context.Context, applyErr error) bool {
	return ctx.Err() != nil || errdefs.IsResourceExhausted(applyErr) && !errors.Is(applyErr, errLayerTooBig)
}

// badDownload returns checkErr, the failed check of layer l's download
// that explains applyErr, the unpack's failure.
func badDownload(ctx context.Context, l Layer, applyErr, checkErr error) error {
	log.G(ctx).WithError(applyErr).Warnf("layer %s failed to unpack and its download failed its check", l.Digest)
	return checkErr
}

// errResumeBad marks a resumed download whose earlier part was corrupt:
// worth one more try from the start.
var errResumeBad = errors.New("resume failed")

// ensureBlob downloads layer i's blob into the content store if missing.
func (p *layerPull) ensureBlob(ctx context.Context, i int) error {
	l := p.img.Layers[i]
	if p.hasBlob(l) {
		return nil
	}
	return p.ensureBlobShared(ctx, l)
}

func (p *layerPull) ensureBlobShared(ctx context.Context, l Layer) error {
	_, err := p.s.layers.do(ctx, "blob:"+l.Digest.String(), func(ctx context.Context) (struct{}, error) {
		for attempt := 0; ; attempt++ {
			if p.hasBlob(l) {
				return struct{}{}, nil
			}
			err := p.download(ctx, l)
			if err == nil || attempt == 2 || !(retryable(err) || errdefs.IsUnavailable(err)) || ctx.Err() != nil {
				return struct{}{}, err
			}
			select {
			case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
			case <-ctx.Done():
				return struct{}{}, ctx.Err()
			}
		}
	})
	return err
}

func (p *layerPull) download(ctx context.Context, l Layer) error {
	release, err := acquire(ctx, p.dl)
	if err != nil {
		return err
	}
	defer release()
	w, err := p.s.content.NewIngest(l.Digest, l.Size)
	for errdefs.IsUnavailable(err) {
		if err := p.s.content.WaitIngest(ctx, l.Digest); err != nil {
			return err
		}
		if p.hasBlob(l) {
			return nil
		}
		w, err = p.s.content.NewIngest(l.Digest, l.Size)
	}
	if err != nil {
		return err
	}
	body, start, err := p.sess.blob(ctx, l.Digest, w.Offset(), l.Size)
	if err != nil {
		w.Close()
		return err
	}
	defer body.Close()
	if start == 0 {
		if err := w.Reset(); err != nil {
			w.Close()
			return err
		}
	} else if _, err := io.Copy(io.Discard, w.Existing()); err != nil {
		w.Close()
		return err
	}
	if _, err := io.Copy(w, body); err != nil {
		w.Close()
		return fmt.Errorf("blob %s: %w: %w", l.Digest, err, errdefs.ErrUnavailable)
	}
	return w.CommitUnsynced()
}

// errLayerTooBig marks a layer that unpacks to more than the store's cap.
var errLayerTooBig = errors.New("layer too big")

// capReader fails once more than max bytes come out of r: the applier
// never sees (so never writes) more than max bytes of a layer.
type capReader struct {
	r    io.Reader
	left int64
	max  int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// Exactly max bytes is fine; one more is not.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("unpacks to more than %d bytes (image.max_unpacked_layer_size): %w: %w", c.max, errLayerTooBig, errdefs.ErrResourceExhausted)
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// applyCompressed decompresses r as l's media type says, applies the tar
// into dir (at most max uncompressed bytes), reads the stream to its end
// and checks the diff ID. Nothing of a failed layer is kept: the caller
// removes the snapshot it unpacked into.
func applyCompressed(ctx context.Context, dir string, r io.Reader, l Layer, mode snapshot.WhiteoutMode, max int64) (snapshot.ApplyResult, error) {
	dec, err := decompressorFor(l.MediaType)
	if err != nil {
		return snapshot.ApplyResult{}, err
	}
	// Decompressors read a few KiB at a time; read the source (and so
	// write the ingest) in big chunks instead.
	br := sourceReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		sourceReaders.Put(br)
	}()
	rc, err := dec(br)
	if err != nil {
		return snapshot.ApplyResult{}, fmt.Errorf("decompressing: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	defer rc.Close()
	h := l.DiffID.Algorithm().Hash()
	tr := io.TeeReader(&capReader{r: rc, left: max, max: max}, h)
	res, err := snapshot.ApplyLayer(ctx, dir, tr, mode)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
			err = fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
		case !errdefs.Classified(err):
			err = fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		}
		return snapshot.ApplyResult{Bytes: res.Bytes}, err
	}
	// The tar may end before the stream: hash the rest (and let the
	// compressed stream reach EOF so its digest is checked).
	rest, err := io.Copy(io.Discard, tr)
	res.Bytes += rest
	if errors.Is(err, errLayerTooBig) {
		return snapshot.ApplyResult{Bytes: res.Bytes}, err
	}
	if err != nil {
		return snapshot.ApplyResult{Bytes: res.Bytes}, fmt.Errorf("reading layer: %w: %w", err, errdefs.ErrUnavailable)
	}
	if got := digest.NewDigest(l.DiffID.Algorithm(), h); got != l.DiffID {
		return snapshot.ApplyResult{Bytes: res.Bytes}, fmt.Errorf("uncompressed layer has digest %s, config says %s: %w", got, l.DiffID, errdefs.ErrFailedPrecondition)
	}
	return res, nil
}

type decompressor func(io.Reader) (io.ReadCloser, error)

// sourceReaders and gzipReaders are reused from layer to layer: a pull
// unpacks several at once, and a megabyte of new buffer and a gzip
// window for each would cost a garbage collection every few layers.
var (
	sourceReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1<<20) }}
	gzipReaders   sync.Pool
)

// pooledGzip goes back to gzipReaders when closed (once: a second Close
// does nothing, so two layers never share a reader).
type pooledGzip struct{ *gzip.Reader }

func (p *pooledGzip) Close() error {
	if p.Reader == nil {
		return nil
	}
	err := p.Reader.Close()
	gzipReaders.Put(p.Reader)
	p.Reader = nil
	return err
}

func decompressorFor(mediaType string) (decompressor, error) {
	switch mediaType {
	case ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // still found in the wild
		"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return func(r io.Reader) (io.ReadCloser, error) {
			z, ok := gzipReaders.Get().(*gzip.Reader)
			if !ok {
				z = new(gzip.Reader)
			}
			if err := z.Reset(r); err != nil {
				gzipReaders.Put(z)
				return nil, err
			}
			return &pooledGzip{z}, nil
		}, nil
	case ocispec.MediaTypeImageLayerZstd, ocispec.MediaTypeImageLayerNonDistributableZstd: //nolint:staticcheck
		return func(r io.Reader) (io.ReadCloser, error) {
			d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20))
			if err != nil {
				return nil, err
			}
			return d.IOReadCloser(), nil
		}, nil
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerNonDistributable, "application/vnd.docker.image.rootfs.diff.tar": //nolint:staticcheck
		return func(r io.Reader) (io.ReadCloser, error) { return io.NopCloser(r), nil }, nil
	}
	return nil, fmt.Errorf("unsupported layer media type %q: %w", mediaType, errdefs.ErrFailedPrecondition)
}

// readCapped reads a registry response body: a read error is the
// network's (Unavailable).
func readCapped(r io.Reader, max int64) ([]byte, error) {
	b, err := capread.Read(r, max)
	if err != nil && !errors.Is(err, capread.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return b, err
}

func randomID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
