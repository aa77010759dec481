package imagestore

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// Tests of layer bytes that reach the tar applier before their digests are
// checked: a layer is unpacked while it downloads, so the unpacked bytes
// are bounded, and a layer that fails either digest (blob or diff ID) is
// never committed, never seen, and leaves nothing.

// gzipBytes compresses b as one gzip member.
func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipBomb returns a gzip stream of at most maxCompressed bytes that
// decompresses to a tar holding one file of up to n bytes of 'A': gzip
// members concatenated (a valid gzip stream), so n bytes are never
// compressed in the test. It returns the file size it reached.
func gzipBomb(t *testing.T, n, maxCompressed int64) ([]byte, int64) {
	t.Helper()
	const chunk = 8 << 20
	member := gzipBytes(t, bytes.Repeat([]byte("A"), chunk))
	end := gzipBytes(t, make([]byte, 1024))
	chunks := n / chunk
	if room := (maxCompressed - 1024 - int64(len(end))) / int64(len(member)); chunks > room {
		chunks = room
	}
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: chunks * chunk}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	out := gzipBytes(t, hdr.Bytes())
	for i := int64(0); i < chunks; i++ {
		out = append(out, member...)
	}
	return append(out, end...), chunks * chunk
}

// wchar is the bytes this process has passed to write(2) and friends.
func wchar(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no wchar in /proc/self/io")
	return 0
}

func (s *testStore) assertEmpty(t *testing.T) {
	t.Helper()
	if n := len(s.List(ctx)); n != 0 {
		t.Errorf("%d images recorded", n)
	}
	if n := s.blobCount(t); n != 0 {
		t.Errorf("%d blobs left behind", n)
	}
	if sn := s.snapshots(t); len(sn) != 0 {
		t.Errorf("snapshots left behind: %v", sn)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.root, "content", "ingest")); len(ents) != 0 {
		t.Errorf("partial downloads left: %v", ents)
	}
}

// TestGzipBombFromMirror: a registry (a compromised or plain-HTTP mirror)
// answers a small layer with a gzip bomb of no more than the layer's size
// that expands 1000-fold. The pull fails, the applier stops at the cap
// instead of writing a GiB, and nothing is left.
func TestGzipBombFromMirror(t *testing.T) { bothModes(t, gzipBombFromMirror) }

func gzipBombFromMirror(t *testing.T, keep bool) {
	const limit = 16 << 20
	reg := newTestRegistry(t)
	noise := make([]byte, 2<<20)
	rand.Read(noise)
	img := imageOf(t, "", layerOf(t, map[string]string{"noise": string(noise)}, "gzip"))
	reg.push(t, "bomb/img:1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lsize, _ := layers[0].Size()
	bomb, expands := gzipBomb(t, 1<<30, lsize)
	if expands < 512<<20 {
		t.Fatalf("bomb expands to only %d bytes", expands)
	}
	reg.setHook(serve("/blobs/"+ld.String(), "application/octet-stream", bomb))
	s := newStore(t, "overlay", "", keepIf(keep), func(c *Config) { c.MaxUnpackedLayerSize = limit })

	before := wchar(t)
	_, err := s.Pull(ctx, reg.host+"/bomb/img:1", nil, nil)
	written := wchar(t) - before
	if !errdefs.IsFailedPrecondition(err) {
		t.Errorf("want failed precondition (the blob fails its digest), got %v", err)
	}
	t.Logf("a %d-byte bomb expanding to %d bytes: %d bytes written", len(bomb), expands, written)
	if written > limit+32<<20 {
		t.Errorf("wrote %d bytes for a layer capped at %d", written, limit)
	}
	s.assertEmpty(t)
}

// TestLayerOverTheCap: an honest layer that unpacks to more than the cap
// fails with ResourceExhausted and leaves nothing; one of exactly the cap
// pulls. Both drivers (overlay unpacks while downloading, native after).
func TestLayerOverTheCap(t *testing.T) { bothModes(t, layerOverTheCap) }

func layerOverTheCap(t *testing.T, keep bool) {
	for _, driver := range []string{"overlay", "native"} {
		t.Run(driver, func(t *testing.T) {
			reg := newTestRegistry(t)
			files := map[string]string{"big": strings.Repeat("A", 4<<20)}
			img := imageOf(t, "", layerOf(t, files, "gzip"))
			reg.push(t, "cap/img:1", img)
			size := int64(len(tarOf(t, files)))

			s := newStore(t, driver, "", keepIf(keep), func(c *Config) { c.MaxUnpackedLayerSize = size - 1 })
			_, err := s.Pull(ctx, reg.host+"/cap/img:1", nil, nil)
			if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "max_unpacked_layer_size") {
				t.Fatalf("layer of %d bytes, cap %d: want resource exhausted naming the key, got %v", size, size-1, err)
			}
			s.assertEmpty(t)

			s = newStore(t, driver, "", keepIf(keep), func(c *Config) { c.MaxUnpackedLayerSize = size })
			got, err := s.Pull(ctx, reg.host+"/cap/img:1", nil, nil)
			if err != nil {
				t.Fatalf("layer of exactly the cap: %v", err)
			}
			if c := s.readFromImage(t, got, "big"); c != files["big"] {
				t.Errorf("content of %d bytes", len(c))
			}
		})
	}
}

// holdLastByte serves blob path with every byte but the last, then waits
// for release and sends last instead of the real last byte.
func holdLastByte(path string, body []byte, last byte, release <-chan struct{}, held *atomic.Bool) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, path) {
			return false
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body[:len(body)-1])
		w.(http.Flusher).Flush()
		held.Store(true)
		<-release
		w.Write([]byte{last})
		return true
	}
}

// TestDigestFailsAtLastByte: a layer whose blob digest, or whose diff ID,
// fails only at its very last byte. Everything else has been unpacked by
// then; the snapshot must never be committed or visible (checked while
// the last byte is held back), and is discarded with the download.
func TestDigestFailsAtLastByte(t *testing.T) { bothModes(t, digestFailsAtLastByte) }

func digestFailsAtLastByte(t *testing.T, keep bool) {
	files := map[string]string{"etc/": "", "etc/data": strings.Repeat("payload\n", 8192)}
	// The tar padded past its end-of-archive blocks, so its last byte is
	// padding the applier reads but never writes.
	good := append(tarOf(t, files), make([]byte, 512)...)
	bad := bytes.Clone(good)
	bad[len(bad)-1] = 1

	for _, tc := range []struct {
		name string
		// blob is what the registry serves, diffID what the config says.
		blob   []byte
		diffID digest.Digest
		// last is the byte sent at the end instead of blob's own.
		last func(blob []byte) byte
	}{
		{"blob digest", gzipBytes(t, good), digest.FromBytes(good), func(b []byte) byte { return b[len(b)-1] ^ 0xff }},
		{"diff ID", gzipBytes(t, bad), digest.FromBytes(good), func(b []byte) byte { return b[len(b)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newTestRegistry(t)
			img, err := mutate.AppendLayers(imageOf(t, ""), static.NewLayer(tc.blob, types.OCILayer))
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := img.ConfigFile()
			cf = cf.DeepCopy()
			cf.RootFS.DiffIDs[0].Hex = tc.diffID.Encoded()
			if img, err = mutate.ConfigFile(img, cf); err != nil {
				t.Fatal(err)
			}
			reg.push(t, "last/img:1", img)
			ld := digest.FromBytes(tc.blob)
			chain := tc.diffID // one layer: its chain ID is its diff ID

			release := make(chan struct{})
			var held atomic.Bool
			reg.setHook(holdLastByte("/blobs/"+ld.String(), tc.blob, tc.last(tc.blob), release, &held))
			s := newStore(t, "overlay", "", keepIf(keep))
			errc := make(chan error, 1)
			go func() {
				_, err := s.Pull(ctx, reg.host+"/last/img:1", nil, nil)
				errc <- err
			}()

			// Wait until all but the last byte is unpacked.
			var unpacked string
			for deadline := time.Now().Add(time.Minute); unpacked == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if !held.Load() {
					continue
				}
				for _, i := range s.snapshots(t) {
					if !strings.HasPrefix(i.Key, extractPrefix) {
						continue
					}
					m, err := s.sn.Mounts(ctx, i.Key)
					if err != nil {
						continue
					}
					if b, err := os.ReadFile(filepath.Join(m[0].Source, "etc/data")); err == nil && string(b) == files["etc/data"] {
						unpacked = i.Key
					}
				}
			}
			if unpacked == "" {
				close(release)
				t.Fatalf("the layer was not unpacked while its last byte was held: %v", <-errc)
			}
			// Unpacked but unverified: nothing may use it.
			if _, err := s.sn.Stat(ctx, chain.String()); !errdefs.IsNotFound(err) {
				t.Errorf("unverified layer committed as %s: %v", chain, err)
			}
			for _, i := range s.snapshots(t) {
				if i.Kind == snapshot.KindCommitted {
					t.Errorf("committed snapshot %s before the layer was verified", i.Key)
				}
			}
			if _, err := s.content.Size(ld); !errdefs.IsNotFound(err) {
				t.Errorf("unverified blob in the content store: %v", err)
			}
			if n := len(s.List(ctx)); n != 0 {
				t.Errorf("%d images recorded before the layer was verified", n)
			}
			close(release)
			if err := <-errc; !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("want failed precondition, got %v", err)
			}
			s.assertEmpty(t)
		})
	}
}

// TestGzipBombHelper checks the test's bomb: a valid gzip stream of a tar
// whose one file has the size it claims.
func TestGzipBombHelper(t *testing.T) {
	bomb, n := gzipBomb(t, 64<<20, 1<<20)
	zr, err := gzip.NewReader(bytes.NewReader(bomb))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bufio.NewReader(zr))
	hdr, err := tr.Next()
	if err != nil || hdr.Size != n || n != 64<<20 {
		t.Fatalf("header %+v, %v; want %d bytes", hdr, err, n)
	}
	h := sha256.New()
	if m, err := io.Copy(h, tr); err != nil || m != n {
		t.Fatalf("read %d, %v", m, err)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("after the file: %v", err)
	}
	t.Logf("%d compressed bytes expand to %d (%dx)", len(bomb), n, n/int64(len(bomb)))
}

// TestBadGzipTailNotRetried: a layer published with data after its gzip
// stream (its blob digest holds, its content does not decode: the applier
// reads the stream to its end) fails with FailedPrecondition at the first
// download: retrying could not help.
func TestBadGzipTailNotRetried(t *testing.T) { bothModes(t, badGzipTailNotRetried) }

func badGzipTailNotRetried(t *testing.T, keep bool) {
	reg := newTestRegistry(t)
	good := tarOf(t, map[string]string{"etc/": "", "etc/data": "payload\n"})
	blob := append(gzipBytes(t, good), "trailing junk"...)
	img, err := mutate.AppendLayers(imageOf(t, ""), static.NewLayer(blob, types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[0].Hex = digest.FromBytes(good).Encoded()
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	reg.push(t, "tail/img:1", img)
	s := newStore(t, "overlay", "", keepIf(keep))
	reg.reset()
	_, err = s.Pull(ctx, reg.host+"/tail/img:1", nil, nil)
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("want failed precondition, got %v", err)
	}
	if n := reg.count("GET", digest.FromBytes(blob).String()); n != 1 {
		t.Errorf("the layer was fetched %d times, want 1", n)
	}
	s.assertEmpty(t)
}

// TestStreamedDownloadRetried: a layer streamed unstored whose connection
// breaks half way is downloaded again from its first byte, and the pull
// completes.
func TestStreamedDownloadRetried(t *testing.T) {
	reg := newTestRegistry(t)
	files := map[string]string{"big": strings.Repeat("0123456789abcdef", 16<<10)}
	ld, data := pushLayer(t, reg, "retry/img:1", files, "gzip")
	var broken atomic.Bool
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, ld.String()) || broken.Swap(true) {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops
	})
	s := newStore(t, "overlay", "")
	reg.reset()
	got, err := s.Pull(ctx, reg.host+"/retry/img:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.readFromImage(t, got, "big"); c != files["big"] {
		t.Errorf("big holds %d bytes", len(c))
	}
	if n, ranged := reg.count("GET", ld.String()), reg.count("GET", ld.String(), "range="); n != 2 || ranged != 0 {
		t.Errorf("%d downloads of the layer, %d of them ranged; want 2 from the first byte: %v", n, ranged, reg.requests)
	}
	if n := s.blobCount(t); n != 2 {
		t.Errorf("%d blobs stored, want 2", n)
	}
}
