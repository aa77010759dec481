package imagestore

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shim-cri/shim/internal/lossydisk"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// randomFile is n bytes that do not compress, the same on every run.
func randomFile(seed uint64, n int) string {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return string(b)
}

type cutPoint struct {
	name  string
	file  string
	after bool // taken after Pull returned
}

// TestPowerCutDuringPull cuts the power at points of a pull, inside layer
// downloads, after each layer commit, after the flush, after Pull returned,
// and checks each disk as it would boot: the image is either complete or
// absent, start-up GC leaves nothing else, and pulling again completes it.
// An image Pull returned must survive. Both with the layers' blobs kept
// and streamed into their snapshots unstored.
func TestPowerCutDuringPull(t *testing.T) { bothModes(t, powerCutDuringPull) }

func powerCutDuringPull(t *testing.T, keep bool) {
	keepOpt := keepIf(keep)
	disk := lossydisk.New(t, 256<<20)
	reg := newTestRegistry(t)
	layerFiles := []map[string]string{
		{"etc/": "", "etc/os-release": "ID=cut\n", "usr/lib/big1": randomFile(1, 3<<20+12345)},
		{"usr/lib/big2": randomFile(2, 2<<20+777), "usr/share/doc/x/README": "layer two\n"},
		{"bin/": "", "bin/tool": randomFile(3, 3<<20+1), "etc/os-release": "ID=cut-3\n"},
	}
	var layers []v1.Layer
	for _, f := range layerFiles {
		layers = append(layers, layerOf(t, f, "gzip"))
	}
	img := imageOf(t, "", layers...)
	reg.push(t, "lib/cut:1", img)
	ref := reg.host + "/lib/cut:1"
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}   // layer digest -> compressed bytes
	bigFile := map[string]string{} // layer digest -> its biggest file
	var layerDigests []digest.Digest
	for i, l := range layers {
		d, b := layerBlob(t, l)
		blobs[d.String()] = b
		for p, c := range layerFiles[i] {
			if len(c) > len(layerFiles[i][bigFile[d.String()]]) {
				bigFile[d.String()] = p
			}
		}
		layerDigests = append(layerDigests, d)
	}
	want := wantImage{id: digest.Digest(cfgName.String()), layers: layerDigests, files: layerFiles}

	var (
		mu   sync.Mutex
		cuts []cutPoint
	)
	cut := func(name string, after bool) {
		file, err := disk.Cut()
		if err != nil {
			t.Errorf("copying the disk at %q: %v", name, err)
			return
		}
		mu.Lock()
		cuts = append(cuts, cutPoint{name: name, file: file, after: after})
		mu.Unlock()
	}

	s := openStore(t, disk.Mnt, "overlay", "", keepOpt)
	// Each layer blob is served in two halves, with a cut once the store
	// has taken in the first (half a download on disk, half a layer
	// unpacked; unstored, the layer's biggest file, which holds the half,
	// written to within 256 KiB of it).
	var cutting atomic.Bool
	cutting.Store(true)
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		data, ok := blobs[path.Base(r.URL.Path)]
		if !cutting.Load() || !ok || r.Method != http.MethodGet || r.Header.Get("Range") != "" {
			return false
		}
		d := digest.Digest(path.Base(r.URL.Path))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", d.String())
		half := len(data) / 2
		w.Write(data[:half])
		w.(http.Flusher).Flush()
		ingest := filepath.Join(disk.Mnt, "content", "ingest", d.Algorithm().String()+"-"+d.Encoded())
		took := func() bool {
			fi, err := os.Stat(ingest)
			return err == nil && fi.Size() >= int64(half)
		}
		if !keep {
			took = func() bool {
				found := false
				filepath.WalkDir(filepath.Join(disk.Mnt, "snapshots"), func(p string, e fs.DirEntry, err error) error {
					if err != nil || !strings.HasSuffix(p, "/fs/"+bigFile[d.String()]) {
						return nil
					}
					if fi, err := e.Info(); err == nil && fi.Size() >= int64(half-256<<10) {
						found = true
						return filepath.SkipAll
					}
					return nil
				})
				return found
			}
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			if took() {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the store did not take in the first %d bytes of %s", half, d)
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		cut("half of layer "+d.Encoded()[:12], false)
		w.Write(data[half:])
		return true
	})
	start := time.Now()
	got, err := s.Pull(ctx, ref, nil, func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		switch {
		case strings.HasPrefix(msg, "layer ") && strings.Contains(msg, "committed"):
			n := strings.Replace(strings.Fields(msg)[1], "/", " of ", 1)
			cut("layer "+n+" committed", false)
		case strings.HasPrefix(msg, "flushed to disk"):
			cut("flushed, before the image record", false)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	cut("Pull returned", true)
	cutting.Store(false)
	t.Logf("pull with %d cuts took %s (%d copies retried while the device wrote)",
		len(cuts), time.Since(start).Round(time.Millisecond), disk.Retries())
	if got.ID != want.id {
		t.Fatalf("pulled %s, want %s", got.ID, want.id)
	}
	if len(cuts) != 2*len(layers)+2 {
		t.Errorf("%d cuts, want %d", len(cuts), 2*len(layers)+2)
	}

	for _, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			mnt := lossydisk.Boot(t, c.file)
			s := openStore(t, mnt, "overlay", "", keepOpt) // start-up GC: no error
			imgs := s.List(ctx)
			switch {
			case c.after && len(imgs) == 0:
				t.Fatal("the image Pull returned is gone")
			case !c.after && len(imgs) > 0:
				t.Errorf("image %s on record before the pull recorded it", imgs[0].ID)
			}
			for _, img := range imgs {
				checkComplete(t, s, img, want)
			}
			checkNothingElse(t, s, imgs)

			// Pulling again (resuming what the crash left) completes it.
			img, err := s.Pull(ctx, ref, nil, nil)
			if err != nil {
				t.Fatalf("pull after the cut: %v", err)
			}
			checkComplete(t, s, img, want)
			checkNothingElse(t, s, []*Image{img})
			ents, err := os.ReadDir(filepath.Join(mnt, "content", "ingest"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if !strings.HasPrefix(e.Name(), "put-") {
					t.Errorf("partial download %s left after a complete pull", e.Name())
				}
			}
		})
	}
}

// wantImage is what a complete copy of the test image holds.
type wantImage struct {
	id     digest.Digest
	layers []digest.Digest
	files  []map[string]string // per layer: path -> content ("/" suffix: directory)
}

// checkComplete checks that img is the test image with every blob the
// store keeps present and matching its digest and size, and every layer snapshot committed
// with the files of its layers.
func checkComplete(t *testing.T, s *testStore, img *Image, want wantImage) {
	t.Helper()
	if img.ID != want.id || len(img.Layers) != len(want.layers) {
		t.Fatalf("image %s with %d layers, want %s with %d", img.ID, len(img.Layers), want.id, len(want.layers))
	}
	sizes := map[digest.Digest]int64{img.Manifest.Digest: img.Manifest.Size, img.ConfigDesc.Digest: img.ConfigDesc.Size}
	for i, l := range img.Layers {
		if l.Digest != want.layers[i] {
			t.Errorf("layer %d is %s, want %s", i, l.Digest, want.layers[i])
		}
		sizes[l.Digest] = l.Size
	}
	for _, b := range s.keptBlobs(img) {
		f, err := s.content.Open(b)
		if err != nil {
			t.Errorf("blob %s: %v", b, err)
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Errorf("blob %s: %v", b, err)
			continue
		}
		if got := digest.NewDigest(digest.SHA256, h); got != b || n != sizes[b] {
			t.Errorf("blob %s holds %d bytes with digest %s, want %d bytes", b, n, got, sizes[b])
		}
	}
	var m ocispec.Manifest
	if b, err := s.content.ReadAll(img.Manifest.Digest, maxManifestSize); err != nil {
		t.Errorf("manifest: %v", err)
	} else if err := json.Unmarshal(b, &m); err != nil {
		t.Errorf("manifest: %v", err)
	} else if m.Config.Digest != img.ID || len(m.Layers) != len(img.Layers) {
		t.Errorf("manifest names config %s and %d layers", m.Config.Digest, len(m.Layers))
	}
	for i, l := range img.Layers {
		info, err := s.sn.Stat(ctx, l.ChainID.String())
		if err != nil || info.Kind != snapshot.KindCommitted {
			t.Errorf("layer %d snapshot %s: %+v, %v", i, l.ChainID, info, err)
			continue
		}
		checkSnapshotFiles(t, s, l.ChainID.String(), want.files[:i+1])
	}
}

// checkSnapshotFiles mounts a view of the committed snapshot key and
// compares its files with layers merged (upper layers win).
func checkSnapshotFiles(t *testing.T, s *testStore, key string, layers []map[string]string) {
	t.Helper()
	files := map[string]string{}
	for _, l := range layers {
		for p, c := range l {
			files[p] = c
		}
	}
	view := "test-view-" + randomID()
	mounts, err := s.sn.View(ctx, view, key)
	if err != nil {
		t.Errorf("view of %s: %v", key, err)
		return
	}
	defer s.sn.Remove(ctx, view)
	target := t.TempDir()
	if err := snapshot.MountAll(mounts, target); err != nil {
		t.Errorf("mounting %s: %v", key, err)
		return
	}
	defer snapshot.UnmountAll(target)
	for p, c := range files {
		if strings.HasSuffix(p, "/") {
			if fi, err := os.Stat(filepath.Join(target, p)); err != nil || !fi.IsDir() {
				t.Errorf("snapshot %s: directory %s: %v", key, p, err)
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(target, p))
		if err != nil {
			t.Errorf("snapshot %s: %v", key, err)
			continue
		}
		if string(b) != c {
			t.Errorf("snapshot %s: %s holds %d bytes, not the %d bytes of the layer", key, p, len(b), len(c))
		}
	}
}

// checkNothingElse checks that the store holds no blob and no snapshot
// but those of imgs.
func checkNothingElse(t *testing.T, s *testStore, imgs []*Image) {
	t.Helper()
	blobs := map[digest.Digest]bool{}
	snaps := map[string]bool{}
	for _, img := range imgs {
		for _, b := range s.keptBlobs(img) {
			blobs[b] = true
		}
		for _, l := range img.Layers {
			snaps[l.ChainID.String()] = true
		}
	}
	if err := s.content.Walk(func(d digest.Digest, _ int64) error {
		if !blobs[d] {
			t.Errorf("blob %s left that no image uses", d)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, i := range s.snapshots(t) {
		if !snaps[i.Key] {
			t.Errorf("snapshot %s (%v) left that no image uses", i.Key, i.Kind)
		}
	}
}
