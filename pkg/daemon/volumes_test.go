package daemon

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestImageVolumeCopiesContent: an image VOLUME gets its own directory,
// filled with what the image has there, and writes to it do not reach the
// image.
func TestImageVolumeCopiesContent(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	base := busyboxImage(t, nil, []string{"sh"})
	var buf bytes.Buffer
	dir := t.TempDir()
	os.MkdirAll(dir+"/data", 0o755)
	os.WriteFile(dir+"/data/seed", []byte("from the image\n"), 0o644)
	if err := tarDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Volumes = map[string]struct{}{"/data": {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := reg.push(t, "test/vol:1", img)
	d := e.start()
	d.pull(t, ref)
	pc := podConfig("vol", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	c := d.create(t, pod, pc, ctrConfig("v", ref, "sh", "-c", "cat /data/seed; echo new > /data/new; grep -c data /proc/self/mountinfo"))
	d.startCtr(t, c)
	st := d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d", st.ExitCode)
	}
	b, _ := os.ReadFile(st.LogPath)
	if !strings.Contains(string(b), "stdout F from the image") || !strings.Contains(string(b), "stdout F 1") {
		t.Errorf("log:\n%s", b)
	}
	// The volume's data is on disk under the root (it survives a
	// reboot), not on the state tmpfs.
	written, _ := filepath.Glob(filepath.Join(e.root, "volumes", c, "*", "new"))
	if len(written) != 1 {
		t.Errorf("the container's write to its image volume is not under %s/volumes/%s: %v", e.root, c, written)
	}
	var onState []string
	filepath.WalkDir(e.state, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if de.IsDir() && de.Name() == "rootfs" {
			return filepath.SkipDir // the image's own /data/seed
		}
		if de.Name() == "new" || de.Name() == "seed" {
			onState = append(onState, p)
		}
		return nil
	})
	if len(onState) > 0 {
		t.Errorf("volume data on the state directory: %v", onState)
	}
	// Removing the container removes its volume data.
	if _, err := d.rs.RemoveContainer(bg, &runtimeapi.RemoveContainerRequest{ContainerId: c}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.root, "volumes", c)); !os.IsNotExist(err) {
		t.Errorf("volume data left after RemoveContainer: %v", err)
	}
	d.removeAllPods(t)
	d.stop(t)
}
