package imagestore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"

	"github.com/shim-cri/shim/pkg/errdefs"
)

var ctx = context.Background()

func TestPullTagStatusRemove(t *testing.T) {
	for _, tc := range []struct {
		driver string
		keep   bool
	}{{"overlay", false}, {"native", false}, {"overlay", true}, {"native", true}} {
		t.Run(fmt.Sprintf("%s/keep=%v", tc.driver, tc.keep), func(t *testing.T) {
			driver := tc.driver
			reg := newTestRegistry(t)
			s := newStore(t, driver, "", keepIf(tc.keep))
			img := imageOf(t, "1002",
				layerOf(t, map[string]string{"etc/": "", "etc/os-release": "ID=test\n"}, "gzip"),
				layerOf(t, map[string]string{"etc/os-release": "ID=zstd\n"}, "zstd"),
				layerOf(t, map[string]string{"plain": "uncompressed\n"}, "none"))
			mdig := reg.push(t, "lib/app:1", img)
			cfgName, _ := img.ConfigName()

			got, err := s.Pull(ctx, reg.host+"/lib/app:1", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID.String() != cfgName.String() {
				t.Errorf("id %s, want config digest %s", got.ID, cfgName)
			}
			wantTag := reg.host + "/lib/app:1"
			wantDigest := reg.host + "/lib/app@" + mdig.String()
			if len(got.RepoTags) != 1 || got.RepoTags[0] != wantTag || len(got.RepoDigests) != 1 || got.RepoDigests[0] != wantDigest {
				t.Errorf("tags %v digests %v", got.RepoTags, got.RepoDigests)
			}
			if uid, name := got.User(); uid == nil || *uid != 1002 || name != "" {
				t.Errorf("user: %v %q", uid, name)
			}
			if got.Size <= 0 || len(got.Layers) != 3 {
				t.Errorf("size %d layers %d", got.Size, len(got.Layers))
			}
			// The manifest and the config, and the layers' blobs if kept;
			// no partial download.
			wantBlobs := 2
			if tc.keep {
				wantBlobs += 3
			}
			if n := s.blobCount(t); n != wantBlobs {
				t.Errorf("%d blobs stored, want %d", n, wantBlobs)
			}
			if ents, err := os.ReadDir(filepath.Join(s.root, "content", "ingest")); err != nil || len(ents) != 0 {
				t.Errorf("ingest holds %d entries (%v)", len(ents), err)
			}
			// Upper layer wins; all three layers are there.
			if c := s.readFromImage(t, got, "etc/os-release"); c != "ID=zstd\n" {
				t.Errorf("etc/os-release = %q", c)
			}
			if c := s.readFromImage(t, got, "plain"); c != "uncompressed\n" {
				t.Errorf("plain = %q", c)
			}
			// Every lookup finds the same image.
			for _, ref := range []string{wantTag, wantDigest, got.ID.String(), got.ID.Encoded()} {
				if g, err := s.Get(ctx, ref); err != nil || g.ID != got.ID {
					t.Errorf("Get(%q) = %v, %v", ref, g, err)
				}
			}
			if _, err := s.Get(ctx, reg.host+"/lib/app:2"); !errdefs.IsNotFound(err) {
				t.Errorf("missing tag: %v", err)
			}
			// Pulled twice: nothing downloaded again but the manifest.
			reg.reset()
			if _, err := s.Pull(ctx, wantTag, nil, nil); err != nil {
				t.Fatal(err)
			}
			if n := reg.count("/blobs/"); n != 0 {
				t.Errorf("second pull fetched %d blobs", n)
			}
			// A second tag of the same image adds a tag.
			reg.push(t, "lib/app:latest", img)
			if _, err := s.Pull(ctx, reg.host+"/lib/app", nil, nil); err != nil {
				t.Fatal(err)
			}
			g, _ := s.Get(ctx, wantTag)
			if len(g.RepoTags) != 2 || len(s.List(ctx)) != 1 {
				t.Errorf("after second tag: tags %v, %d images", g.RepoTags, len(s.List(ctx)))
			}
			// Removing by one tag removes the image, every name, and GC
			// leaves no blob and no snapshot.
			if err := s.Remove(ctx, reg.host+"/lib/app:latest"); err != nil {
				t.Fatal(err)
			}
			for _, ref := range []string{wantTag, wantDigest, got.ID.String()} {
				if _, err := s.Get(ctx, ref); !errdefs.IsNotFound(err) {
					t.Errorf("after remove, Get(%q): %v", ref, err)
				}
			}
			if n := s.blobCount(t); n != 0 {
				t.Errorf("%d blobs left", n)
			}
			if sn := s.snapshots(t); len(sn) != 0 {
				t.Errorf("snapshots left: %v", sn)
			}
			// Removing again succeeds.
			if err := s.Remove(ctx, wantTag); err != nil {
				t.Errorf("second remove: %v", err)
			}
		})
	}
}

func TestSharedLayersSurviveRemove(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	base := layerOf(t, map[string]string{"base": "shared\n"}, "gzip")
	a := imageOf(t, "", base, layerOf(t, map[string]string{"a": "a\n"}, "gzip"))
	b := imageOf(t, "", base, layerOf(t, map[string]string{"b": "b\n"}, "gzip"))
	reg.push(t, "x/a:1", a)
	reg.push(t, "x/b:1", b)
	ia, err := s.Pull(ctx, reg.host+"/x/a:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg.reset()
	ib, err := s.Pull(ctx, reg.host+"/x/b:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ia.Layers[0].ChainID != ib.Layers[0].ChainID {
		t.Fatal("shared base layer has different chain IDs")
	}
	if n := reg.count("/blobs/"); n != 2 { // config and the top layer
		t.Errorf("second image fetched %d blobs, want 2", n)
	}
	if err := s.Remove(ctx, ia.ID.String()); err != nil {
		t.Fatal(err)
	}
	if c := s.readFromImage(t, ib, "base"); c != "shared\n" {
		t.Errorf("shared layer after removing the other image: %q", c)
	}
	if n := len(s.snapshots(t)); n != 2 {
		t.Errorf("%d snapshots, want 2", n)
	}
}

func TestConcurrentPullsShareDownload(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	img := simpleImage(t, "c")
	reg.push(t, "c/img:1", img)
	reg.push(t, "c/img:2", img)
	reg.reset()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Pull(ctx, fmt.Sprintf("%s/c/img:%d", reg.host, 1+i%2), nil, nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if n := reg.count("GET", d.String()); n != 1 {
			t.Errorf("layer %s fetched %d times", d, n)
		}
	}
	g, err := s.Get(ctx, reg.host+"/c/img:2")
	if err != nil || len(g.RepoTags) != 2 {
		t.Fatalf("image: %+v %v", g, err)
	}
}

func TestIndexPlatformSelection(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	amd := simpleImage(t, "amd64")
	arm := simpleImage(t, "arm64")
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	idig := reg.pushIndex(t, "multi/arch:1", idx)
	got, err := s.Pull(ctx, reg.host+"/multi/arch:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := amd.ConfigName()
	if got.ID.String() != want.String() {
		t.Fatalf("chose %s, want amd64 image %s", got.ID, want)
	}
	if got.RepoDigests[0] != reg.host+"/multi/arch@"+idig.String() {
		t.Errorf("repo digest %v, want the index digest", got.RepoDigests)
	}
	if c := s.readFromImage(t, got, "etc/os-release"); c != "ID=amd64\n" {
		t.Errorf("content %q", c)
	}
	// An index without our platform is NotFound.
	only := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	reg.pushIndex(t, "multi/armonly:1", only)
	if _, err := s.Pull(ctx, reg.host+"/multi/armonly:1", nil, nil); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "linux/arm64") {
		t.Fatalf("arm-only index: %v", err)
	}
}

func TestPullByDigest(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	d := reg.push(t, "by/digest:1", simpleImage(t, "d"))
	ref := reg.host + "/by/digest@" + d.String()
	got, err := s.Pull(ctx, ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.RepoTags) != 0 || len(got.RepoDigests) != 1 || got.RepoDigests[0] != ref {
		t.Fatalf("tags %v digests %v", got.RepoTags, got.RepoDigests)
	}
}

func TestMirrorFromHostsToml(t *testing.T) {
	reg := newTestRegistry(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "registry.k8s.io"), 0o755)
	hosts := fmt.Sprintf("server = \"https://registry.k8s.io\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.host)
	os.WriteFile(filepath.Join(dir, "registry.k8s.io", "hosts.toml"), []byte(hosts), 0o644)
	s := newStore(t, "overlay", dir)
	reg.push(t, "pause:3.9", simpleImage(t, "pause"))
	got, err := s.Pull(ctx, "registry.k8s.io/pause:3.9", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.RepoTags[0] != "registry.k8s.io/pause:3.9" || !strings.HasPrefix(got.RepoDigests[0], "registry.k8s.io/pause@sha256:") {
		t.Errorf("names %v %v", got.RepoTags, got.RepoDigests)
	}
	if reg.count("GET", "/v2/pause/manifests/3.9") != 1 {
		t.Error("mirror not asked for the manifest")
	}
	st, _ := s.Get(ctx, "registry.k8s.io/pause:3.9")
	if !s.Pinned(st) {
		t.Error("configured pinned image not pinned")
	}
}

func TestPullDeadline(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	reg.push(t, "slow/img:1", simpleImage(t, "slow"))
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		time.Sleep(100 * time.Millisecond)
		return false
	})
	c, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	_, err := s.Pull(c, reg.host+"/slow/img:1", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
}

// TestKeepLayerBlobsSwitched: a store reopened with keep_layer_blobs
// turned on fetches the blobs of an image pulled without them at its next
// pull; turned off again, the start-up collection removes them.
func TestKeepLayerBlobsSwitched(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "sw/img:1", simpleImage(t, "sw"))
	ref := reg.host + "/sw/img:1"
	s := newStore(t, "overlay", "")
	root := s.root
	reopen := func(keep bool) {
		t.Helper()
		s.Close()
		s.db.Close()
		s = openStore(t, root, "overlay", "", keepIf(keep))
	}
	if _, err := s.Pull(ctx, ref, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := s.blobCount(t); n != 2 {
		t.Fatalf("%d blobs without keeping layers', want 2", n)
	}
	reopen(true)
	reg.reset()
	img, err := s.Pull(ctx, ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.blobCount(t); n != 4 {
		t.Errorf("%d blobs once kept, want 4", n)
	}
	for _, l := range img.Layers {
		if n := reg.count("GET", l.Digest.String()); n != 1 {
			t.Errorf("layer %s fetched %d times, want 1", l.Digest, n)
		}
	}
	if c := s.readFromImage(t, img, "bin/hello"); c != "hello sw\n" {
		t.Errorf("bin/hello = %q", c)
	}
	reopen(false)
	if n := s.blobCount(t); n != 2 {
		t.Errorf("%d blobs after a start without keeping layers', want 2", n)
	}
	if c := s.readFromImage(t, img, "bin/hello"); c != "hello sw\n" {
		t.Errorf("bin/hello after the collection = %q", c)
	}
}

// TestDropLayerBlobsHeld: the native driver's layer blob that another pull
// holds is kept past this pull's end and removed when that hold goes.
func TestDropLayerBlobsHeld(t *testing.T) {
	reg := newTestRegistry(t)
	img := simpleImage(t, "held")
	reg.push(t, "held/img:1", img)
	layers, _ := img.Layers()
	shared, _ := layers[0].Digest()
	s := newStore(t, "native", "")
	release := s.hold(shared.String()) // as another pull of an image with this layer
	if _, err := s.Pull(ctx, reg.host+"/held/img:1", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.content.Size(digest.Digest(shared.String())); err != nil {
		t.Errorf("the held blob is gone: %v", err)
	}
	if n := s.blobCount(t); n != 3 {
		t.Errorf("%d blobs while the other pull runs, want 3 (the manifest, the config, the held layer)", n)
	}
	release()
	if n := s.blobCount(t); n != 2 {
		t.Errorf("%d blobs after the other pull, want 2", n)
	}
}
