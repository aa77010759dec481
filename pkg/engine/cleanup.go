package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// unmountAll unmounts everything at or below a path (a variable so tests
// can make an unmount fail).
var unmountAll = snapshot.UnmountAll

// Cleanup never deletes across a mount. A container's rootfs may still
// have mounts under it that belong to the host (a Bidirectional or rshared
// volume propagated back): when an unmount fails, nothing of the bundle is
// removed, the error is reported and the removal is retried later (the
// next RemoveContainer or RemovePodSandbox, or the next start). Mount
// points are removed without recursion and every recursive removal is
// mount-aware (snapshot.RemoveAll), so a mount the unmount missed stops it
// too.

// unavailable marks an unclassified cleanup error as retryable.
func unavailable(err error) error {
	if err == nil || errdefs.Classified(err) {
		return err
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
}

// releaseContainerFiles unmounts a container's rootfs and image volumes
// and then removes its snapshots, its bundle and its image VOLUME data. It
// stops at the first failure; calling it again continues.
func (r *Runtime) releaseContainerFiles(ctx context.Context, c *Container) error {
	v := c.view()
	if err := unmountBundle(v.Bundle); err != nil {
		return fmt.Errorf("container %s: %w (its files are kept)", v.ID, err)
	}
	for _, iv := range v.ImageVolumes {
		if err := r.o.Snapshotter.Remove(ctx, iv.Snapshot); err != nil && !errdefs.IsNotFound(err) {
			return unavailable(fmt.Errorf("removing image volume snapshot %s: %w", iv.Snapshot, err))
		}
	}
	if v.Snapshot != "" {
		if err := r.o.Snapshotter.Remove(ctx, v.Snapshot); err != nil && !errdefs.IsNotFound(err) {
			return unavailable(fmt.Errorf("removing snapshot %s: %w", v.Snapshot, err))
		}
	}
	if v.Own {
		// Its cgroup is the daemon's (no runtime made it).
		if err := execdrv.RemoveCgroup(ctx, v.Bundle, v.ID); err != nil {
			return unavailable(fmt.Errorf("removing the cgroup of %s: %w", v.ID, err))
		}
	}
	if err := removeBundle(v.Bundle); err != nil {
		return fmt.Errorf("container %s: %w", v.ID, err)
	}
	return r.removeVolumeData(v.ID)
}

// bundleMountPoints are the directories of a bundle something is mounted
// on: the rootfs and one per image volume.
func bundleMountPoints(bundle string) []string {
	out := []string{filepath.Join(bundle, "rootfs")}
	vols, _ := os.ReadDir(filepath.Join(bundle, "imagevols"))
	for _, v := range vols {
		out = append(out, filepath.Join(bundle, "imagevols", v.Name()))
	}
	return out
}

// unmountBundle unmounts a bundle's rootfs and image volumes, and
// everything mounted below them.
func unmountBundle(bundle string) error {
	for _, p := range bundleMountPoints(bundle) {
		if err := unmountAll(p); err != nil {
			return unavailable(fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return nil
}

// removeBundle removes an unmounted bundle: its mount points must be empty
// directories and are removed without recursion, then the rest, never
// crossing into a mount.
func removeBundle(bundle string) error {
	for _, p := range bundleMountPoints(bundle) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return unavailable(fmt.Errorf("removing mount point %s: %w", p, err))
		}
	}
	if err := snapshot.RemoveAll(bundle); err != nil {
		return unavailable(fmt.Errorf("removing bundle %s: %w", bundle, err))
	}
	return nil
}

// removePodDir removes a pod's state directory. Bundles left in it (a
// create whose rollback could not unmount) are unmounted first; an unmount
// that fails keeps the whole directory.
func removePodDir(dir string) error {
	ctrs, err := os.ReadDir(filepath.Join(dir, "ctrs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, c := range ctrs {
		b := filepath.Join(dir, "ctrs", c.Name())
		if err := unmountBundle(b); err != nil {
			return err
		}
		if err := removeBundle(b); err != nil {
			return err
		}
	}
	for _, m := range []string{"shm", podFilesDir} {
		if err := unmount(filepath.Join(dir, m)); err != nil {
			return unavailable(err)
		}
	}
	if err := snapshot.RemoveAll(dir); err != nil {
		return unavailable(fmt.Errorf("removing pod directory %s: %w", dir, err))
	}
	return nil
}

// volumeDir holds a container's image VOLUME data, on disk under the root.
func (r *Runtime) volumeDir(id string) string {
	return filepath.Join(r.o.Root, "volumes", id)
}

// removeVolumeData removes a container's image VOLUME data.
func (r *Runtime) removeVolumeData(id string) error {
	if err := snapshot.RemoveAll(r.volumeDir(id)); err != nil {
		return unavailable(fmt.Errorf("removing the volume data of container %s: %w", id, err))
	}
	return nil
}
