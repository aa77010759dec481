package imagestore

import (
	"archive/tar"
	"bytes"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"encoding/base64"
	"fmt"
	"github.com/shim-cri/shim/pkg/snapshot"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// TestManifestRedirect: registry.k8s.io redirects manifest requests to
// its backing registry; pulls must follow.
func TestManifestRedirect(t *testing.T) {
	backing := newTestRegistry(t)
	backing.push(t, "r/img:1", simpleImage(t, "redirected"))
	front := newTestRegistry(t)
	front.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/" {
			return false
		}
		http.Redirect(w, r, "http://"+backing.host+r.URL.Path, http.StatusTemporaryRedirect)
		return true
	})
	s := newStore(t, "overlay", "")
	if _, err := s.Pull(ctx, front.host+"/r/img:1", nil, nil); err != nil {
		t.Fatal(err)
	}
	if front.count("GET", "/manifests/") == 0 || backing.count("GET", "/manifests/1") == 0 {
		t.Fatal("the redirect was not followed")
	}
}

// TestMirrorGetsNoUpstreamCredentials: credentials kubelet gives for the
// upstream registry are not sent to a mirror of it; hosts.toml headers
// are not sent to the hosts a redirect leads to.
func TestMirrorGetsNoUpstreamCredentials(t *testing.T) {
	mirror := newTestRegistry(t)
	mirror.push(t, "lib/img:1", simpleImage(t, "mirrored"))
	storage := newTestRegistry(t)
	var leaked []string
	storage.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if h := r.Header.Get("Authorization") + r.Header.Get("X-Secret"); h != "" {
			leaked = append(leaked, r.URL.Path+": "+h)
		}
		return false
	})
	storage.push(t, "lib/img:1", simpleImage(t, "mirrored"))
	mirror.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if got := r.Header.Get("Authorization"); strings.Contains(got, base64.StdEncoding.EncodeToString([]byte("alice:upstream-secret"))) {
			leaked = append(leaked, "mirror got the upstream credentials")
		}
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, "http://"+storage.host+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	})
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "upstream.example"), 0o755)
	hosts := fmt.Sprintf("server = \"https://upstream.example\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  [host.\"http://%s\".header]\n    X-Secret = \"s3\"\n", mirror.host, mirror.host)
	os.WriteFile(filepath.Join(dir, "upstream.example", "hosts.toml"), []byte(hosts), 0o644)
	s := newStore(t, "overlay", dir)
	_, err := s.Pull(ctx, "upstream.example/lib/img:1", &Auth{Username: "alice", Password: "upstream-secret", ServerAddress: "upstream.example"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaked) > 0 {
		t.Fatalf("leaked: %v", leaked)
	}
}

// TestStalledDownloadIsCut: a registry that stops sending in the middle of
// a layer does not hold the pull forever.
func TestStalledDownloadIsCut(t *testing.T) { bothModes(t, stalledDownloadIsCut) }

func stalledDownloadIsCut(t *testing.T, keep bool) {
	old := blobIdleTimeout
	blobIdleTimeout = 300 * time.Millisecond
	defer func() { blobIdleTimeout = old }()
	reg := newTestRegistry(t)
	img := imageOf(t, "", layerOf(t, map[string]string{"big": strings.Repeat("x", 1<<20)}, "none"))
	reg.push(t, "stall/img:1", img)
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	stop := make(chan struct{})
	defer close(stop)
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, d.String()) {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(1<<20+2048))
		w.Write([]byte(strings.Repeat("y", 1000)))
		w.(http.Flusher).Flush()
		<-stop // never send the rest
		return true
	})
	s := newStore(t, "overlay", "", keepIf(keep))
	start := time.Now()
	_, err := s.Pull(ctx, reg.host+"/stall/img:1", nil, nil)
	if err == nil || !errdefs.IsUnavailable(err) {
		t.Fatalf("want unavailable, got %v", err)
	}
	if time.Since(start) > time.Minute {
		t.Fatal("stalled download not cut")
	}
}

// TestSameBlobTwice: one layer blob at two positions of the chain (and so
// wanted by two unpackers at once) is downloaded once and used twice when
// it is stored (kept, or for the native driver until its layers are
// committed); streamed into each position's snapshot otherwise.
func TestSameBlobTwice(t *testing.T) {
	for _, driver := range []string{"overlay", "native"} {
		for _, keep := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/keep=%v", driver, keep), func(t *testing.T) { sameBlobTwice(t, driver, keep) })
		}
	}
}

func sameBlobTwice(t *testing.T, driver string, keep bool) {
	reg := newTestRegistry(t)
	l := layerOf(t, map[string]string{"same": "same\n"}, "gzip")
	x := layerOf(t, map[string]string{"same": "other\n"}, "gzip")
	img := imageOf(t, "", l, x, l)
	reg.push(t, "twice/img:1", img)
	ld, _ := l.Digest()
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, ld.String()) {
			time.Sleep(300 * time.Millisecond)
		}
		return false
	})
	s := newStore(t, driver, "", keepIf(keep))
	got, err := s.Pull(ctx, reg.host+"/twice/img:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.readFromImage(t, got, "same"); c != "same\n" {
		t.Errorf("top layer content %q", c)
	}
	want, blobs := 1, 4 // the manifest, the config and both layers' blobs
	if !keep {
		blobs = 2
		if driver == "overlay" {
			want = 2
		}
	}
	if n := reg.count("GET", ld.String()); n != want {
		t.Errorf("the shared blob was fetched %d times, want %d: %v", n, want, reg.requests)
	}
	if n := s.blobCount(t); n != blobs {
		t.Errorf("%d blobs stored, want %d", n, blobs)
	}
}

// TestImplicitDirectoriesKeepParentAttributes: a layer with a file in a
// directory it has no entry for (and no root entry) must not change how
// the lower layers' directories look once layers are unpacked apart.
func TestImplicitDirectoriesKeepParentAttributes(t *testing.T) {
	for _, driver := range []string{"overlay", "native"} {
		t.Run(driver, func(t *testing.T) {
			reg := newTestRegistry(t)
			var b1, b2 bytes.Buffer
			tw := tar.NewWriter(&b1)
			tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, Gid: 7})
			tw.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 1000, Gid: 1000})
			tw.Close()
			tw = tar.NewWriter(&b2)
			tw.WriteHeader(&tar.Header{Name: "data/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
			tw.Write([]byte("x\n"))
			tw.Close()
			l1 := static.NewLayer(b1.Bytes(), types.OCIUncompressedLayer)
			l2 := static.NewLayer(b2.Bytes(), types.OCIUncompressedLayer)
			reg.push(t, "implicit/img:1", imageOf(t, "", l1, l2))
			s := newStore(t, driver, "")
			img, err := s.Pull(ctx, reg.host+"/implicit/img:1", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			key := "test-view-" + randomID()
			mounts, err := s.sn.View(ctx, key, img.ChainID())
			if err != nil {
				t.Fatal(err)
			}
			defer s.sn.Remove(ctx, key)
			target := t.TempDir()
			if err := snapshot.MountAll(mounts, target); err != nil {
				t.Fatal(err)
			}
			defer snapshot.UnmountAll(target)
			for p, want := range map[string]struct {
				mode os.FileMode
				uid  uint32
			}{"data": {0o1777, 1000}, ".": {0o750, 7}} {
				fi, err := os.Stat(filepath.Join(target, p))
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if got := os.FileMode(st.Mode & 0o7777); got != want.mode || st.Uid != want.uid {
					t.Errorf("%s: mode %o uid %d, want %o uid %d", p, got, st.Uid, want.mode, want.uid)
				}
			}
		})
	}
}
