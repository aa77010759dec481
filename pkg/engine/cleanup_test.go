package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/imagestore"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/native"
)

// testRuntime is a Runtime on temporary directories with the native
// snapshotter, no network and no monitors: enough for the cleanup paths.
func testRuntime(t *testing.T) *Runtime {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (bind mounts)")
	}
	dir := t.TempDir()
	t.Cleanup(func() { snapshot.UnmountAll(dir) })
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sn, err := native.New(context.Background(), filepath.Join(dir, "root"), db)
	if err != nil {
		t.Fatal(err)
	}
	r := &Runtime{
		o:     RuntimeOptions{State: filepath.Join(dir, "state"), Root: filepath.Join(dir, "root"), DB: db, Snapshotter: sn},
		store: recordStore{db: db}, events: newEventBus(),
		sandboxes: map[string]*Sandbox{}, containers: map[string]*Container{},
		podNames: map[string]string{}, ctrNames: map[string]string{}, monitors: map[string]*podMonitor{},
	}
	r.nsDir = filepath.Join(r.o.State, "ns")
	r.handlers = resolveHandlers(r.o.Handlers, r.libctRoot(), r.runcRoot())
	if err := r.store.init(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(r.o.State, "pods"), r.libctRoot()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// hostVolume is a host directory with files a container mounts; check
// fails the test unless every file is still there.
func hostVolume(t *testing.T) (dir string, check func(what string)) {
	t.Helper()
	dir = t.TempDir()
	files := map[string]string{"a": "host data a", "sub/b": "host data b", "sub/deeper/c": "host data c"}
	for p, data := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, func(what string) {
		t.Helper()
		for p, data := range files {
			if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != data {
				t.Errorf("%s: host file %s: %q %v", what, p, b, err)
			}
		}
	}
}

// sharedBind mounts src on dst (created) as a recursive bind made rshared,
// as a Bidirectional CRI mount leaves it.
func sharedBind(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
	if err := unix.Mount("", dst, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
}

var errUnmountFails = errors.New("unmount made to fail by the test")

// failUnmounts makes every unmount of the engine fail until the test ends.
func failUnmounts(t *testing.T) {
	old := unmountAll
	unmountAll = func(p string) error { return &os.PathError{Op: "umount", Path: p, Err: errUnmountFails} }
	t.Cleanup(func() { unmountAll = old })
}

// testContainer prepares a container's bundle as CreateContainer does
// (snapshot mounted on rootfs) and mounts the host volume rshared under
// its rootfs. rb holds the create's rollback steps.
func testContainer(t *testing.T, r *Runtime, podDir, host string) (*Container, *rollback) {
	t.Helper()
	id := newID()
	c := &Container{ID: id, SandboxID: filepath.Base(podDir), Bundle: filepath.Join(podDir, "ctrs", id), Snapshot: "ctr-" + id}
	rb := &rollback{}
	errGen := errors.New("spec generation fails after the mounts")
	_, err := r.prepareBundle(context.Background(), &Sandbox{ID: c.SandboxID, Dir: podDir}, c, &imagestore.Image{}, rb,
		func(rootfs, _ string) (*specs.Spec, error) {
			sharedBind(t, host, filepath.Join(rootfs, "data"))
			return nil, errGen
		})
	if !errors.Is(err, errGen) {
		t.Fatalf("prepareBundle: %v", err)
	}
	return c, rb
}

// TestCleanupKeepsHostData: a host path mounted rshared under a
// container's rootfs whose unmount fails keeps every file, whichever path
// cleans the container up; the cleanup reports the failure and keeps what
// it could not remove safely.
func TestCleanupKeepsHostData(t *testing.T) {
	ctx := context.Background()
	log := &Job{logger: logrus.NewEntry(logrus.StandardLogger())}

	t.Run("create rollback", func(t *testing.T) {
		r := testRuntime(t)
		host, check := hostVolume(t)
		pod := filepath.Join(r.o.State, "pods", newID())
		c, rb := testContainer(t, r, pod, host)
		failUnmounts(t)
		rb.run(ctx)
		check("create rollback")
		if _, err := os.Stat(c.Bundle); err != nil {
			t.Errorf("bundle removed with its mounts still attached: %v", err)
		}
	})

	t.Run("remove container", func(t *testing.T) {
		r := testRuntime(t)
		host, check := hostVolume(t)
		pod := filepath.Join(r.o.State, "pods", newID())
		c, _ := testContainer(t, r, pod, host)
		c.State = ContainerExited
		r.containers[c.ID] = c
		r.updateContainer(c, func(*Container) {})
		failUnmounts(t)
		if err := r.deleteContainer(ctx, c); err == nil {
			t.Errorf("delete succeeded with its rootfs still mounted")
		}
		check("remove container")
		if _, err := r.getContainer(c.ID); err != nil {
			t.Errorf("record dropped although the files were not removed: %v", err)
		}
	})

	t.Run("leftover of a container without a pod", func(t *testing.T) {
		r := testRuntime(t)
		host, check := hostVolume(t)
		pod := filepath.Join(r.o.State, "pods", newID())
		c, _ := testContainer(t, r, pod, host)
		failUnmounts(t)
		r.cleanContainerLeftovers(ctx, c)
		check("container leftovers")
	})

	t.Run("orphan pod directory", func(t *testing.T) {
		r := testRuntime(t)
		host, check := hostVolume(t)
		pod := filepath.Join(r.o.State, "pods", newID())
		testContainer(t, r, pod, host)
		failUnmounts(t)
		r.cleanOrphans(ctx)
		check("orphan pod")
		if _, err := os.Stat(pod); err != nil {
			t.Errorf("orphan pod directory removed with mounts attached: %v", err)
		}
	})

	t.Run("orphan bundle of a known pod", func(t *testing.T) {
		r := testRuntime(t)
		host, check := hostVolume(t)
		id := newID()
		pod := filepath.Join(r.o.State, "pods", id)
		r.sandboxes[id] = &Sandbox{ID: id, Dir: pod, State: SandboxReady}
		testContainer(t, r, pod, host)
		failUnmounts(t)
		r.cleanOrphans(ctx)
		check("orphan bundle")
	})

	t.Run("remove pod", func(t *testing.T) {
		r := testRuntime(t)
		host, check := hostVolume(t)
		id := newID()
		pod := filepath.Join(r.o.State, "pods", id)
		sb := &Sandbox{ID: id, Name: "p", Dir: pod, State: SandboxNotReady}
		r.sandboxes[id], r.podNames["p"] = sb, id
		r.saveSandbox(sb)
		testContainer(t, r, pod, host) // a bundle the rollback could not remove
		failUnmounts(t)
		if _, err := r.removePod(ctx, log, id); err == nil {
			t.Errorf("pod removed with a container's mounts still attached")
		}
		check("remove pod")
		if _, err := r.getSandbox(id); err != nil {
			t.Errorf("pod record dropped although its directory was not removed: %v", err)
		}
	})

	t.Run("unmount works", func(t *testing.T) {
		r := testRuntime(t)
		host, check := hostVolume(t)
		pod := filepath.Join(r.o.State, "pods", newID())
		c, _ := testContainer(t, r, pod, host)
		c.State = ContainerExited
		r.containers[c.ID] = c
		r.updateContainer(c, func(*Container) {})
		if err := r.deleteContainer(ctx, c); err != nil {
			t.Fatalf("delete: %v", err)
		}
		check("delete")
		if _, err := os.Stat(c.Bundle); !os.IsNotExist(err) {
			t.Errorf("bundle left: %v", err)
		}
		if _, err := r.o.Snapshotter.Stat(ctx, c.Snapshot); err == nil {
			t.Errorf("snapshot %s left", c.Snapshot)
		}
		if err := removePodDir(pod); err != nil {
			t.Errorf("removing the pod directory: %v", err)
		}
	})
}
