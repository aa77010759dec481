package imagestore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// serve answers a matching GET with body and the given media type.
func serve(path, mediaType string, body []byte) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, path) {
			return false
		}
		w.Header().Set("Content-Type", mediaType)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
		return true
	}
}

func TestBadRegistryContentLeavesNothing(t *testing.T) { bothModes(t, badRegistryContent) }

func badRegistryContent(t *testing.T, keep bool) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "", keepIf(keep))
	img := simpleImage(t, "bad")
	mdig := reg.push(t, "bad/img:1", img)
	other := reg.push(t, "bad/other:1", simpleImage(t, "other"))
	cfg, _ := img.ConfigName()
	layers, _ := img.Layers()
	l0, _ := layers[0].Digest()
	l0data, _ := layers[0].Compressed()
	l0bytes, _ := io.ReadAll(l0data)
	otherManifest := func() []byte {
		oi := simpleImage(t, "other")
		b, _ := oi.RawManifest()
		return b
	}()

	for _, tc := range []struct {
		name  string
		ref   string
		hook  func(w http.ResponseWriter, r *http.Request) bool
		class error
	}{
		{"malformed manifest", "bad/img:1", serve("/manifests/1", "application/vnd.oci.image.manifest.v1+json", []byte(`{"schemaVersion": 2, "config": `)), errdefs.ErrFailedPrecondition},
		{"wrong media type", "bad/img:1", serve("/manifests/1", "text/html", []byte(`<html>hello</html>`)), errdefs.ErrFailedPrecondition},
		{"schema1", "bad/img:1", serve("/manifests/1", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion": 1, "fsLayers": []}`)), errdefs.ErrFailedPrecondition},
		{"wrong digest", "bad/img@" + mdig.String(), serve("/manifests/"+mdig.String(), "application/vnd.oci.image.manifest.v1+json", otherManifest), errdefs.ErrFailedPrecondition},
		{"manifest over the cap", "bad/img:1", serve("/manifests/1", "application/vnd.oci.image.manifest.v1+json", []byte(`{"schemaVersion":2,"pad":"`+strings.Repeat("x", maxManifestSize)+`"}`)), errdefs.ErrResourceExhausted},
		{"malformed config", "bad/img:1", serve("/blobs/"+cfg.String(), "application/octet-stream", []byte(`{"rootfs": `)), errdefs.ErrFailedPrecondition},
		{"truncated layer", "bad/img:1", serve("/blobs/"+l0.String(), "application/octet-stream", l0bytes[:len(l0bytes)/2]), errdefs.ErrFailedPrecondition},
		{"corrupt layer", "bad/img:1", serve("/blobs/"+l0.String(), "application/octet-stream", append([]byte{0x1f, 0x8b, 0, 0}, l0bytes[4:]...)), errdefs.ErrFailedPrecondition},
		{"layer longer than its size, without end", "bad/img:1", endless("/blobs/"+l0.String(), l0bytes), errdefs.ErrFailedPrecondition},
		// Unpacks to the layer (its diff ID holds): only the blob's digest fails.
		{"layer with another gzip header", "bad/img:1", serve("/blobs/"+l0.String(), "application/octet-stream", otherOS(l0bytes)), errdefs.ErrFailedPrecondition},
		{"missing image", "bad/none:1", nil, errdefs.ErrNotFound},
		{"missing digest", "bad/img@" + other.String()[:len(other.String())-4] + "0000", nil, errdefs.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.setHook(tc.hook)
			pctx, cancel := context.WithTimeout(ctx, time.Minute) // a pull that never ends fails
			_, err := s.Pull(pctx, reg.host+"/"+tc.ref, nil, nil)
			cancel()
			reg.setHook(nil)
			if err == nil || !errorsIs(err, tc.class) {
				t.Fatalf("want %v, got %v", tc.class, err)
			}
			if n := len(s.List(ctx)); n != 0 {
				t.Errorf("%d images recorded", n)
			}
			if n := s.blobCount(t); n != 0 {
				t.Errorf("%d blobs left behind", n)
			}
			if sn := s.snapshots(t); len(sn) != 0 {
				t.Errorf("snapshots left behind: %v", sn)
			}
		})
	}
	// Afterwards the good image still pulls.
	if _, err := s.Pull(ctx, reg.host+"/bad/img:1", nil, nil); err != nil {
		t.Fatal(err)
	}
}

// endless serves blob path as body followed by zeros until the client
// goes, without a length.
func endless(path string, body []byte) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, path) {
			return false
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := w.Write(body); err != nil {
			return true
		}
		zeros := make([]byte, 64<<10)
		for {
			if _, err := w.Write(zeros); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
		}
	}
}

// otherOS returns gzip data with another OS byte in its header: the same
// content, another digest.
func otherOS(gz []byte) []byte {
	b := bytes.Clone(gz)
	b[9] ^= 1
	return b
}

func errorsIs(err, class error) bool {
	return errdefs.Class(err) == errdefs.Class(fmt.Errorf("x: %w", class))
}

func TestResumePartialDownload(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "", keepBlobs) // the ingest is kept only to store the blob
	big := map[string]string{"big": strings.Repeat("0123456789abcdef", 64<<10)}
	d, data := pushLayer(t, reg, "resume/img:1", big, "none")
	size := int64(len(data))
	// A previous pull stopped half way.
	half := size / 2
	ingest := filepath.Join(s.root, "content", "ingest", "sha256-"+d.Encoded())
	if err := os.WriteFile(ingest, data[:half], 0o600); err != nil {
		t.Fatal(err)
	}
	reg.reset()
	got, err := s.Pull(ctx, reg.host+"/resume/img:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.count("GET", d.String(), fmt.Sprintf("range=bytes=%d-%d", half, size-1)); n != 1 {
		t.Errorf("no ranged request resuming at %d: %v", half, reg.requests)
	}
	if c := s.readFromImage(t, got, "big"); c != big["big"] {
		t.Errorf("resumed layer content wrong (%d bytes)", len(c))
	}
	if _, err := os.Stat(ingest); !os.IsNotExist(err) {
		t.Errorf("ingest left after commit: %v", err)
	}
}

// TestResumeWithWrongPartialData: a partial download whose bytes are not
// the blob's is resumed (a ranged request from its end), fails its check,
// is dropped, and the same pull downloads the blob again from the start
// and succeeds.
func TestResumeWithWrongPartialData(t *testing.T) {
	for _, comp := range []string{"none", "gzip"} {
		t.Run(comp, func(t *testing.T) {
			reg := newTestRegistry(t)
			s := newStore(t, "overlay", "", keepBlobs)
			noise := make([]byte, 50000)
			rand.Read(noise)
			content := hex.EncodeToString(noise) // 100000 bytes that gzip to more than the garbage
			img := imageOf(t, "", layerOf(t, map[string]string{"f": content}, comp))
			reg.push(t, "resume/bad:1", img)
			layers, _ := img.Layers()
			d, _ := layers[0].Digest()
			size, _ := layers[0].Size()
			garbage := []byte(strings.Repeat("garbage!", 1000))
			if int64(len(garbage)) >= size {
				t.Fatalf("layer of %d bytes is too small for the test", size)
			}
			ingest := filepath.Join(s.root, "content", "ingest", "sha256-"+d.Hex)
			if err := os.WriteFile(ingest, garbage, 0o600); err != nil {
				t.Fatal(err)
			}
			reg.reset()
			got, err := s.Pull(ctx, reg.host+"/resume/bad:1", nil, nil)
			if err != nil {
				t.Fatalf("one pull must recover from bad partial data: %v", err)
			}
			resumed := fmt.Sprintf("range=bytes=%d-%d", len(garbage), size-1)
			if n := reg.count("GET", d.String(), resumed); n != 1 {
				t.Errorf("%d requests resuming at %d, want 1: %v", n, len(garbage), reg.requests)
			}
			if n := reg.count("GET", d.String()) - reg.count("GET", d.String(), "range="); n != 1 {
				t.Errorf("%d full downloads after the failed resume, want 1: %v", n, reg.requests)
			}
			if c := s.readFromImage(t, got, "f"); c != content {
				t.Errorf("layer content wrong (%d bytes)", len(c))
			}
			if _, err := os.Stat(ingest); !os.IsNotExist(err) {
				t.Errorf("ingest left after the pull: %v", err)
			}
			if size, err := s.content.Size(digest.Digest(d.String())); err != nil || size != int64(len(mustCompressed(t, layers[0]))) {
				t.Errorf("blob in the store: %d bytes, %v", size, err)
			}
		})
	}
}

func mustCompressed(t *testing.T, l interface{ Compressed() (io.ReadCloser, error) }) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRegistryAuth(t *testing.T) {
	for _, scheme := range []string{"basic", "bearer"} {
		t.Run(scheme, func(t *testing.T) {
			reg := newTLSTestRegistry(t)
			dir := t.TempDir()
			writeHosts(t, dir, reg.host, fmt.Sprintf("server = \"https://%s\"\nca = %q\n", reg.host, reg.ca))
			s := newStore(t, "overlay", dir)
			reg.push(t, "private/img:1", simpleImage(t, "private"))
			basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
			reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/token" {
					if r.Header.Get("Authorization") != basic {
						w.WriteHeader(http.StatusUnauthorized)
						return true
					}
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(`{"token": "tok-123", "expires_in": 300}`))
					return true
				}
				want, challenge := basic, `Basic realm="test"`
				if scheme == "bearer" {
					want = "Bearer tok-123"
					challenge = fmt.Sprintf(`Bearer realm="https://%s/token",service="test"`, reg.host)
				}
				if r.Header.Get("Authorization") != want {
					w.Header().Set("WWW-Authenticate", challenge)
					w.WriteHeader(http.StatusUnauthorized)
					w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"auth required"}]}`))
					return true
				}
				return false
			})
			ref := reg.host + "/private/img:1"
			if _, err := s.Pull(ctx, ref, nil, nil); !errdefs.IsUnauthenticated(err) {
				t.Fatalf("anonymous pull: want unauthenticated, got %v", err)
			}
			if _, err := s.Pull(ctx, ref, &Auth{Username: "alice", Password: "wrong"}, nil); err == nil {
				t.Fatal("wrong password accepted")
			}
			if _, err := s.Pull(ctx, ref, &Auth{Username: "alice", Password: "s3cret"}, nil); err != nil {
				t.Fatalf("user/password: %v", err)
			}
			s.Remove(ctx, ref)
			auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
			if _, err := s.Pull(ctx, ref, &Auth{Auth: auth, ServerAddress: reg.host}, nil); err != nil {
				t.Fatalf("auth field: %v", err)
			}
			s.Remove(ctx, ref)
			// Credentials for another registry are not sent.
			if _, err := s.Pull(ctx, ref, &Auth{Username: "alice", Password: "s3cret", ServerAddress: "other.example"}, nil); err == nil {
				t.Fatal("credentials for another server were used")
			}
		})
	}
}

// TestGzipReaderReuse decompresses through the pooled gzip readers: a
// stream that is not gzip, then good ones, several at once, each read to
// its end and checked.
func TestGzipReaderReuse(t *testing.T) {
	dec, err := decompressorFor("application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dec(strings.NewReader("not gzip at all")); err == nil {
		t.Fatal("a stream that is not gzip decompressed")
	}
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		if _, err := w.Write(b); err != nil {
			panic(err)
		}
		if err := w.Close(); err != nil {
			panic(err)
		}
		return buf.Bytes()
	}
	done := make(chan error)
	for i := range 8 {
		go func() {
			want := bytes.Repeat([]byte{byte(i)}, 100<<10+i)
			for range 4 {
				rc, err := dec(bytes.NewReader(gz(want)))
				if err != nil {
					done <- err
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				rc.Close() // a second Close must not pool the reader twice
				if err != nil || !bytes.Equal(got, want) {
					done <- fmt.Errorf("stream %d: %d bytes, %v; want %d", i, len(got), err, len(want))
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
