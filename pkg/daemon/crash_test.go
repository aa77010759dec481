package daemon

import (
	"context"
	"io"
	"log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func dirEntries(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue // the driver's marker
		}
		out = append(out, e.Name())
	}
	return out
}

// TestKill9DuringPull kills the daemon with SIGKILL at spread-out moments
// of a slow pull. After each restart the image must be there completely or
// not at all, with no blob and no snapshot that no image uses.
func TestKill9DuringPull(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	if testing.Short() {
		t.Skip("slow: not run with -short")
	}
	// A registry that serves blobs slowly, so a pull takes about a second.
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			reg.ServeHTTP(&slowWriter{ResponseWriter: w}, r)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(512<<10, 6)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/crash/img:1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()

	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	imageRef := host + "/crash/img:1"
	blobDir := filepath.Join(e.root, "content", "blobs", "sha256")
	snapDir := filepath.Join(e.root, "snapshots")

	// Time one full pull to spread the kills over it.
	d := e.start()
	c := d.is
	start := time.Now()
	if _, err := c.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}}); err != nil {
		t.Fatal(err)
	}
	full := time.Since(start)
	c.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}})
	d.kill9()
	t.Logf("a full pull takes %s", full)

	rng := rand.New(rand.NewSource(1))
	// Kills spread over 0 to 1.3 × a full pull, so some land after it.
	const rounds = 12
	completeSeen, absentSeen := 0, 0
	for i := 0; i < rounds; i++ {
		d := e.start()
		c := d.is
		go c.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}})
		delay := time.Duration(1.3 * float64(full) * (float64(i) + rng.Float64()) / rounds)
		time.Sleep(delay)
		d.kill9()

		// Restart: start-up cleanup runs, then inspect.
		d = e.start()
		c = d.is
		st, err := c.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}})
		if err != nil {
			t.Fatal(err)
		}
		blobs, snaps := dirEntries(t, blobDir), dirEntries(t, snapDir)
		if st.GetImage() == nil {
			absentSeen++
			if len(blobs) != 0 || len(snaps) != 0 {
				t.Errorf("round %d (kill after %s): image absent but %d blobs and %d snapshots left: %v %v", i, delay, len(blobs), len(snaps), blobs, snaps)
			}
		} else {
			completeSeen++
			// The manifest and the config (the layers streamed into
			// their snapshots, their blobs not kept: image.keep_layer_blobs),
			// and one snapshot per layer.
			if len(blobs) != 2 || len(snaps) != len(layers) {
				t.Errorf("round %d (kill after %s): image present with %d blobs and %d snapshots, want %d and %d",
					i, delay, len(blobs), len(snaps), 2, len(layers))
			}
			c.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}})
		}
		d.kill9()
	}
	t.Logf("after %d kills: %d complete, %d absent", rounds, completeSeen, absentSeen)
	if absentSeen == 0 || completeSeen == 0 {
		t.Error("kills did not land both mid-pull and after it; the test did not test both outcomes")
	}
	// The store still works: a final pull completes and the image runs its course.
	d = e.start()
	c = d.is
	if _, err := c.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}}); err != nil {
		t.Fatalf("pull after the crashes: %v", err)
	}
	if n := len(dirEntries(t, snapDir)); n != len(layers) {
		t.Errorf("%d snapshots after a clean pull, want %d", n, len(layers))
	}
}

// slowWriter writes at about 1 MiB/s in 16 KiB chunks.
type slowWriter struct {
	http.ResponseWriter
}

func (s *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 16<<10)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[k:]
		time.Sleep(15 * time.Millisecond)
	}
	return n, nil
}
