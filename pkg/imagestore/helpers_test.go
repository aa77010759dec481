package imagestore

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/native"
	"github.com/shim-cri/shim/pkg/snapshot/overlay"
)

// testRegistry is a real OCI registry (go-containerregistry's) on loopback
// that records the requests it serves and lets a test intercept them.
type testRegistry struct {
	srv  *httptest.Server
	host string
	ca   string // PEM file of the server's certificate (TLS registries)

	mu       sync.Mutex
	requests []string
	hook     func(w http.ResponseWriter, r *http.Request) bool // true: handled
}

func newTestRegistry(t *testing.T) *testRegistry {
	return startTestRegistry(t, false)
}

// newTLSTestRegistry is a test registry serving https with a certificate
// for 127.0.0.1; tr.ca holds it as a CA for hosts.toml.
func newTLSTestRegistry(t *testing.T) *testRegistry {
	return startTestRegistry(t, true)
}

func startTestRegistry(t *testing.T, useTLS bool) *testRegistry {
	tr := &testRegistry{}
	reg := registry.New(registry.Logger(nullLogger()))
	tr.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		line := r.Method + " " + r.URL.Path
		if rg := r.Header.Get("Range"); rg != "" {
			line += " range=" + rg
		}
		if a := r.Header.Get("Authorization"); a != "" {
			line += " authorization=" + a
		}
		tr.requests = append(tr.requests, line)
		hook := tr.hook
		tr.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	if useTLS {
		tr.srv.StartTLS()
		tr.ca = filepath.Join(t.TempDir(), "ca.pem")
		pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tr.srv.Certificate().Raw})
		if err := os.WriteFile(tr.ca, pemData, 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		tr.srv.Start()
	}
	t.Cleanup(tr.srv.Close)
	tr.host = strings.TrimPrefix(strings.TrimPrefix(tr.srv.URL, "http://"), "https://")
	return tr
}

// authorizations lists the Authorization headers the registry received.
func (tr *testRegistry) authorizations() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []string
	for _, r := range tr.requests {
		if _, a, ok := strings.Cut(r, " authorization="); ok {
			out = append(out, a)
		}
	}
	return out
}

func (tr *testRegistry) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	tr.mu.Lock()
	tr.hook = h
	tr.mu.Unlock()
}

// count returns how many recorded requests contain all of parts.
func (tr *testRegistry) count(parts ...string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
outer:
	for _, r := range tr.requests {
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue outer
			}
		}
		n++
	}
	return n
}

func (tr *testRegistry) reset() {
	tr.mu.Lock()
	tr.requests = nil
	tr.mu.Unlock()
}

func (tr *testRegistry) push(t *testing.T, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(tr.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	hook := tr.hook
	tr.hook = nil
	tr.mu.Unlock()
	defer tr.setHook(hook)
	if err := remote.Write(ref, img, remote.WithTransport(tr.srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (tr *testRegistry) pushIndex(t *testing.T, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(tr.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithTransport(tr.srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	return d
}

func nullLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// tarOf builds an uncompressed tar of files (name -> content; a name
// ending in "/" is a directory).
func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		hdr := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}
		if strings.HasSuffix(n, "/") {
			hdr = &tar.Header{Name: n, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			tw.Write([]byte(files[n]))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// layerOf makes a layer of files with the given compression ("gzip",
// "zstd" or "none").
func layerOf(t *testing.T, files map[string]string, comp string) v1.Layer {
	t.Helper()
	data := tarOf(t, files)
	if comp == "none" {
		return static.NewLayer(data, types.OCIUncompressedLayer)
	}
	opts := []tarball.LayerOption{tarball.WithMediaType(types.OCILayer)}
	if comp == "zstd" {
		opts = []tarball.LayerOption{tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd)}
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf makes an OCI image of layers with the given config user.
func imageOf(t *testing.T, user string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.User = user
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// simpleImage is a two-layer image whose files carry tag so images differ.
func simpleImage(t *testing.T, tag string) v1.Image {
	return imageOf(t, "",
		layerOf(t, map[string]string{"etc/": "", "etc/os-release": "ID=" + tag + "\n"}, "gzip"),
		layerOf(t, map[string]string{"bin/": "", "bin/hello": "hello " + tag + "\n"}, "gzip"))
}

type testStore struct {
	*Store
	root string
	db   *bolt.DB
}

// pushLayer pushes ref, an image of one layer of files, and returns the
// layer's digest and compressed bytes.
func pushLayer(t *testing.T, reg *testRegistry, ref string, files map[string]string, comp string) (digest.Digest, []byte) {
	t.Helper()
	l := layerOf(t, files, comp)
	reg.push(t, ref, imageOf(t, "", l))
	return layerBlob(t, l)
}

// layerBlob returns l's digest and compressed bytes.
func layerBlob(t *testing.T, l v1.Layer) (digest.Digest, []byte) {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(d.String()), mustCompressed(t, l)
}

// keepBlobs is the store option that keeps layers' blobs after unpacking.
func keepBlobs(c *Config) { c.KeepLayerBlobs = true }

// keepIf sets KeepLayerBlobs to keep.
func keepIf(keep bool) func(*Config) { return func(c *Config) { c.KeepLayerBlobs = keep } }

// bothModes runs f with the layers' blobs streamed unstored, then kept.
func bothModes(t *testing.T, f func(t *testing.T, keep bool)) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) { f(t, keep) })
	}
}

// newStore opens a store on driver ("overlay" or "native") under a temp
// dir, with registry config dir regDir. Needs root.
func newStore(t *testing.T, driver, regDir string, opts ...func(*Config)) *testStore {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (snapshots keep ownership, overlay mounts)")
	}
	root := t.TempDir()
	return openStore(t, root, driver, regDir, opts...)
}

func openStore(t *testing.T, root, driver, regDir string, opts ...func(*Config)) *testStore {
	t.Helper()
	ctx := context.Background()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var sn snapshot.Snapshotter
	switch driver {
	case "overlay":
		sn, err = overlay.New(ctx, filepath.Join(root, "snapshots"), db)
	case "native":
		sn, err = native.New(ctx, filepath.Join(root, "snapshots"), db)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	cfg := Config{
		ContentRoot:       filepath.Join(root, "content"),
		DB:                db,
		Snapshotter:       sn,
		RegistryConfigDir: regDir,
		Pinned:            []string{"registry.k8s.io/pause:3.9"},
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testStore{Store: s, root: root, db: db}
}

// blobCount and snapshotCount count what is stored.
func (s *testStore) blobCount(t *testing.T) int {
	n := 0
	if err := s.content.Walk(func(_ digest.Digest, _ int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *testStore) snapshots(t *testing.T) []snapshot.Info {
	var out []snapshot.Info
	if err := s.sn.Walk(context.Background(), func(_ context.Context, i snapshot.Info) error {
		out = append(out, i)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// readFromImage mounts a view of img's top layer and reads path in it.
func (s *testStore) readFromImage(t *testing.T, img *Image, path string) string {
	t.Helper()
	ctx := context.Background()
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
	b, err := os.ReadFile(filepath.Join(target, path))
	if err != nil {
		return fmt.Sprintf("error: %v", err)
	}
	return string(b)
}
