package imagestore

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// Content is the content store: immutable blobs by digest under
// <root>/blobs/<alg>/<hex>, and partial downloads under <root>/ingest,
// kept so an interrupted download resumes where it stopped.
type Content struct {
	root string

	mu      sync.Mutex
	ingests map[digest.Digest]chan struct{} // open ingests (one writer per digest), closed on release
}

// NewContent opens (creating) a content store at root.
func NewContent(root string) (*Content, error) {
	for _, d := range []string{"blobs/sha256", "ingest"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, err
		}
	}
	return &Content{root: root, ingests: map[digest.Digest]chan struct{}{}}, nil
}

// Path is where the blob dgst lives once committed.
func (c *Content) Path(dgst digest.Digest) string {
	return filepath.Join(c.root, "blobs", dgst.Algorithm().String(), dgst.Encoded())
}

func (c *Content) ingestPath(dgst digest.Digest) string {
	return filepath.Join(c.root, "ingest", dgst.Algorithm().String()+"-"+dgst.Encoded())
}

// Size reports the size of a committed blob, ErrNotFound if absent.
func (c *Content) Size(dgst digest.Digest) (int64, error) {
	if err := dgst.Validate(); err != nil {
		return 0, fmt.Errorf("digest %q: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(c.Path(dgst))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound)
		}
		return 0, err
	}
	return fi.Size(), nil
}

// Open opens a committed blob.
func (c *Content) Open(dgst digest.Digest) (*os.File, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(c.Path(dgst))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound)
	}
	return f, err
}

// ReadAll reads a committed blob of at most max bytes.
func (c *Content) ReadAll(dgst digest.Digest, max int64) ([]byte, error) {
	f, err := c.Open(dgst)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := capread.Read(f, max)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	return b, nil
}

// Delete removes a committed blob; a missing blob is not an error.
func (c *Content) Delete(dgst digest.Digest) error {
	if err := os.Remove(c.Path(dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Walk calls fn for every committed blob.
func (c *Content) Walk(fn func(dgst digest.Digest, size int64) error) error {
	algs, err := os.ReadDir(filepath.Join(c.root, "blobs"))
	if err != nil {
		return err
	}
	for _, alg := range algs {
		ents, err := os.ReadDir(filepath.Join(c.root, "blobs", alg.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), e.Name())
			if dgst.Validate() != nil {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			if err := fn(dgst, info.Size()); err != nil {
				return err
			}
		}
	}
	return nil
}

// CleanIngest removes partial downloads not touched for longer than age,
// and any that are not in use when age is 0.
func (c *Content) CleanIngest(age time.Duration) (int, error) {
	dir := filepath.Join(c.root, "ingest")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		name := e.Name()
		if strings.HasPrefix(name, "put-") && time.Since(info.ModTime()) > time.Minute {
			// A small blob's temp file: never resumed.
			if os.RemoveAll(filepath.Join(dir, name)) == nil {
				n++
			}
			continue
		}
		if i := strings.IndexByte(name, '-'); i > 0 {
			dgst := digest.NewDigestFromEncoded(digest.Algorithm(name[:i]), name[i+1:])
			c.mu.Lock()
			busy := c.ingests[dgst] != nil
			c.mu.Unlock()
			if busy {
				continue
			}
		}
		if time.Since(info.ModTime()) >= age {
			if os.RemoveAll(filepath.Join(dir, name)) == nil {
				n++
			}
		}
	}
	return n, nil
}

// Ingest is one writer of a blob, resuming a partial download if one is
// in the ingest area. Use Existing to read (and hash) the bytes already
// there, then Write the rest, then Commit.
type Ingest struct {
	blobCheck
	c        *Content
	f        *os.File
	offset   int64 // bytes already on disk when the ingest was opened
	existing bool  // Existing has been consumed
	closed   bool
}

// blobCheck hashes and counts a blob's bytes as they arrive: more than its
// size (when known, >= 0) is refused at once, and verify checks the size
// and the digest at the end.
type blobCheck struct {
	dgst    digest.Digest
	size    int64
	h       hash.Hash
	written int64 // bytes hashed so far
}

func newBlobCheck(dgst digest.Digest, size int64) blobCheck {
	return blobCheck{dgst: dgst, size: size, h: dgst.Algorithm().Hash()}
}

// fits refuses n more bytes if they take the blob past its size.
func (b *blobCheck) fits(n int) error {
	if b.size >= 0 && b.written+int64(n) > b.size {
		return fmt.Errorf("blob %s: more data than its size %d: %w", b.dgst, b.size, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (b *blobCheck) add(p []byte) {
	b.h.Write(p)
	b.written += int64(len(p))
}

func (b *blobCheck) verify() error {
	if b.size >= 0 && b.written != b.size {
		return fmt.Errorf("blob %s: got %d bytes, want %d: %w", b.dgst, b.written, b.size, errdefs.ErrFailedPrecondition)
	}
	if got := digest.NewDigest(b.dgst.Algorithm(), b.h); got != b.dgst {
		return fmt.Errorf("blob %s: content has digest %s: %w", b.dgst, got, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// checkedReader reads a blob through its checks (a download that is not
// stored: blobCheck.verify once it is read to its end).
type checkedReader struct {
	blobCheck
	r io.Reader
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.size >= 0 && int64(len(p)) > c.size-c.written {
		// Read one byte past the size at most, to catch a longer blob.
		p = p[:c.size-c.written+1]
	}
	n, err := c.r.Read(p)
	if ferr := c.fits(n); ferr != nil {
		return 0, ferr
	}
	c.add(p[:n])
	return n, err
}

// NewIngest opens the ingest for dgst of the given size (-1 if unknown).
// Only one ingest per digest can be open; a second one gets ErrUnavailable.
func (c *Content) NewIngest(dgst digest.Digest, size int64) (*Ingest, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	c.mu.Lock()
	if c.ingests[dgst] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("blob %s is already being written: %w", dgst, errdefs.ErrUnavailable)
	}
	c.ingests[dgst] = make(chan struct{})
	c.mu.Unlock()
	f, err := os.OpenFile(c.ingestPath(dgst), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		c.release(dgst)
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		c.release(dgst)
		return nil, err
	}
	off := fi.Size()
	if size >= 0 && off > size {
		// Longer than the blob can be: start again.
		if err := f.Truncate(0); err != nil {
			f.Close()
			c.release(dgst)
			return nil, err
		}
		off = 0
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		c.release(dgst)
		return nil, err
	}
	return &Ingest{blobCheck: newBlobCheck(dgst, size), c: c, f: f, offset: off}, nil
}

func (c *Content) release(dgst digest.Digest) {
	c.mu.Lock()
	if ch := c.ingests[dgst]; ch != nil {
		close(ch)
	}
	delete(c.ingests, dgst)
	c.mu.Unlock()
}

// WaitIngest waits until nobody writes blob dgst.
func (c *Content) WaitIngest(ctx context.Context, dgst digest.Digest) error {
	c.mu.Lock()
	ch := c.ingests[dgst]
	c.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Offset is the number of bytes already downloaded when the ingest opened.
func (w *Ingest) Offset() int64 { return w.offset }

// Existing reads the bytes already in the ingest, hashing them as they are
// read. It must be read to EOF before the first Write.
func (w *Ingest) Existing() io.Reader {
	w.existing = true
	return io.TeeReader(io.NewSectionReader(w.f, 0, w.offset), hashCounter{w})
}

type hashCounter struct{ w *Ingest }

func (h hashCounter) Write(p []byte) (int, error) {
	h.w.add(p)
	return len(p), nil
}

// Reset drops any partial data and starts the blob from byte 0.
func (w *Ingest) Reset() error {
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	w.offset, w.written = 0, 0
	w.h.Reset()
	return nil
}

// writebackChunk is how much of a blob is written before its writeback starts.
const writebackChunk = 1 << 20

// Write appends p to the blob.
func (w *Ingest) Write(p []byte) (int, error) {
	if w.written < w.offset {
		return 0, fmt.Errorf("ingest %s: existing %d bytes not read before write: %w", w.dgst, w.offset, errdefs.ErrInternal)
	}
	if err := w.fits(len(p)); err != nil {
		return 0, err
	}
	n, err := w.f.Write(p)
	w.add(p[:n])
	// Start writing back every MiB as it arrives, without waiting, so the
	// flush at commit finds little left to do.
	if w.written/writebackChunk != (w.written-int64(n))/writebackChunk {
		start := (w.written/writebackChunk - 1) * writebackChunk
		unix.SyncFileRange(int(w.f.Fd()), start, writebackChunk, unix.SYNC_FILE_RANGE_WRITE)
	}
	return n, err
}

// Commit verifies size and digest, makes the blob durable and moves it into
// the store. On a mismatch the partial data is discarded.
func (w *Ingest) Commit() error { return w.commit(true) }

// CommitUnsynced is Commit without the flush: the caller calls Sync
// before anything refers to the blob.
func (w *Ingest) CommitUnsynced() error { return w.commit(false) }

func (w *Ingest) commit(sync bool) error {
	if w.closed {
		return fmt.Errorf("ingest %s already closed: %w", w.dgst, errdefs.ErrInternal)
	}
	defer w.close()
	if err := w.verify(); err != nil {
		w.discard()
		return err
	}
	if sync {
		if err := w.f.Sync(); err != nil {
			return err
		}
	}
	if err := w.f.Chmod(0o444); err != nil {
		return err
	}
	dst := w.c.Path(w.dgst)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	return syncDir(filepath.Dir(dst))
}

// Sync flushes the filesystem of the content store (syncfs).
func (c *Content) Sync() error {
	d, err := os.Open(c.root)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

// SyncBlobs flushes the blobs dgsts (each there) and the directories from
// theirs up to the store's root (a first blob of an algorithm made its
// directory).
func (c *Content) SyncBlobs(dgsts []digest.Digest) error {
	dirs := map[string]bool{}
	for _, d := range dgsts {
		p := c.Path(d)
		for dir := filepath.Dir(p); !dirs[dir]; dir = filepath.Dir(dir) {
			dirs[dir] = true
			if dir == c.root || len(dir) <= len(c.root) {
				break
			}
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the ingest, keeping any partial data for a later resume.
func (w *Ingest) Close() error {
	if w.closed {
		return nil
	}
	return w.close()
}

// Discard closes the ingest and removes its partial data.
func (w *Ingest) Discard() {
	if !w.closed {
		w.discard()
		w.close()
	}
}

func (w *Ingest) discard() { os.Remove(w.f.Name()) }

func (w *Ingest) close() error {
	w.closed = true
	err := w.f.Close()
	w.c.release(w.dgst)
	return err
}

// Put stores a small blob from memory (manifests, configs), unflushed: it
// is durable after SyncBlobs or Sync (a pull flushes once, before it
// records the image). Concurrent Puts of the same blob are fine: each
// writes its own temp file and the rename is atomic.
func (c *Content) Put(dgst digest.Digest, data []byte) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	if got := dgst.Algorithm().FromBytes(data); got != dgst {
		return fmt.Errorf("blob %s: content has digest %s: %w", dgst, got, errdefs.ErrFailedPrecondition)
	}
	if _, err := c.Size(dgst); err == nil {
		return nil
	}
	f, err := os.CreateTemp(filepath.Join(c.root, "ingest"), "put-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o444)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), c.Path(dgst))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
