package daemon

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/internal/lossydisk"
)

// TestPowerCutDuringCreate puts the daemon's root on a disk whose power
// the test cuts (lossydisk) whenever the disk has written something new
// while CreateContainer runs, and once more after it returned. A daemon booted on each copy (a fresh state
// directory, as after a reboot) must list the container with its snapshot
// or not at all, leave no snapshot nothing uses, and remove it and the pod
// cleanly; the container CreateContainer returned must be there.
func TestPowerCutDuringCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: not run with -short")
	}
	disk := lossydisk.New(t, 256<<20)
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	e.root = disk.Mnt
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	pc := podConfig("cut", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	snapDir := filepath.Join(e.root, "snapshots")
	imageSnaps := dirEntries(t, snapDir)

	const maxCuts = 10
	var (
		cuts []string // written by the goroutine until done
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for len(cuts) < maxCuts {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			f, err := disk.CutIfChanged()
			if err != nil {
				t.Errorf("copying the disk: %v", err)
				return
			}
			if f != "" {
				cuts = append(cuts, f)
			}
		}
	}()
	ctr := d.create(t, pod, pc, ctrConfig("c", img, "sleep", "1000"))
	close(stop)
	<-done
	during := len(cuts)
	after, err := disk.Cut()
	if err != nil {
		t.Fatal(err)
	}
	cuts = append(cuts, after)
	t.Logf("%d cuts during the create, one after (%d copies retried while the device wrote)", during, disk.Retries())
	// The reboot: the pods and the daemon go, the state directory with them.
	d.removeAllPods(t)
	d.stop(t)

	present := 0
	for i, f := range cuts {
		returned := i == len(cuts)-1
		t.Run(fmt.Sprintf("cut %d of %d", i+1, len(cuts)), func(t *testing.T) {
			be := *e
			be.t = t
			be.root = lossydisk.Boot(t, f)
			d := be.start()
			snaps := func() []string { return dirEntries(t, filepath.Join(be.root, "snapshots")) }
			if l, err := d.rs.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{}); err != nil || len(l.Items) != 1 || l.Items[0].Id != pod {
				t.Errorf("pods after the cut: %v, %v; want %s", l.GetItems(), err, pod)
			}
			l, err := d.rs.ListContainers(bg, &runtimeapi.ListContainersRequest{})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case len(l.Containers) > 1 || len(l.Containers) == 1 && l.Containers[0].Id != ctr:
				t.Fatalf("containers after the cut: %v", l.Containers)
			case len(l.Containers) == 0:
				if returned {
					t.Fatal("the container CreateContainer returned is gone")
				}
				if s := snaps(); !slices.Equal(s, imageSnaps) {
					t.Errorf("no container but snapshots %v, want the image's %v", s, imageSnaps)
				}
			default:
				present++
				if _, err := d.rs.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{ContainerId: ctr}); err != nil {
					t.Errorf("status: %v", err)
				}
				if s := snaps(); len(s) != len(imageSnaps)+1 {
					t.Errorf("container with snapshots %v, want the image's %v and one more", s, imageSnaps)
				}
				if _, err := d.rs.RemoveContainer(bg, &runtimeapi.RemoveContainerRequest{ContainerId: ctr}); err != nil {
					t.Errorf("remove: %v", err)
				}
				if s := snaps(); !slices.Equal(s, imageSnaps) {
					t.Errorf("after removing the container: snapshots %v, want the image's %v", s, imageSnaps)
				}
			}
			d.removeAllPods(t)
			d.stop(t)
		})
	}
	t.Logf("container present on %d of %d copies", present, len(cuts))
}
