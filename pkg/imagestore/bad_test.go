package imagestore

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

func TestBadRegistryContentLeavesNothing(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
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
		{"manifest over the cap", "bad/img:1", serve("/manifests/1", "application/vnd.oci.image.manifest.v1+json", []byte(`{"schemaVersion":2,"pad":"`+strings.Repeat("x", maxManifestSize)+`"}`)), errdefs.ErrFailedPrecondition},
		{"malformed config", "bad/img:1", serve("/blobs/"+cfg.String(), "application/octet-stream", []byte(`{"rootfs": `)), errdefs.ErrFailedPrecondition},
		{"truncated layer", "bad/img:1", serve("/blobs/"+l0.String(), "application/octet-stream", l0bytes[:len(l0bytes)/2]), errdefs.ErrFailedPrecondition},
		{"corrupt layer", "bad/img:1", serve("/blobs/"+l0.String(), "application/octet-stream", append([]byte{0x1f, 0x8b, 0, 0}, l0bytes[4:]...)), errdefs.ErrFailedPrecondition},
		{"missing image", "bad/none:1", nil, errdefs.ErrNotFound},
		{"missing digest", "bad/img@" + other.String()[:len(other.String())-4] + "0000", nil, errdefs.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg.setHook(tc.hook)
			_, err := s.Pull(ctx, reg.host+"/"+tc.ref, nil, nil)
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

func errorsIs(err, class error) bool {
	return errdefs.Class(err) == errdefs.Class(fmt.Errorf("x: %w", class))
}

func TestResumePartialDownload(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	big := map[string]string{"big": strings.Repeat("0123456789abcdef", 64<<10)}
	img := imageOf(t, "", layerOf(t, big, "none"))
	reg.push(t, "resume/img:1", img)
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	rc, _ := layers[0].Compressed()
	data, _ := io.ReadAll(rc)
	// A previous pull stopped half way.
	half := size / 2
	ingest := filepath.Join(s.root, "content", "ingest", "sha256-"+d.Hex)
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

func TestResumeWithWrongPartialData(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	img := imageOf(t, "", layerOf(t, map[string]string{"f": strings.Repeat("z", 100000)}, "none"))
	reg.push(t, "resume/bad:1", img)
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	ingest := filepath.Join(s.root, "content", "ingest", "sha256-"+d.Hex)
	os.WriteFile(ingest, []byte(strings.Repeat("garbage!", 1000)), 0o600)
	// The first attempt fails its checks and drops the bad partial data;
	// the retry starts clean.
	if _, err := s.Pull(ctx, reg.host+"/resume/bad:1", nil, nil); err != nil {
		if _, err := s.Pull(ctx, reg.host+"/resume/bad:1", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(ctx, reg.host+"/resume/bad:1"); err != nil {
		t.Fatal(err)
	}
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
