package specgen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// Container paths the pod provides.
const (
	etcHostname   = "/etc/hostname"
	etcHosts      = "/etc/hosts"
	etcResolvConf = "/etc/resolv.conf"
	devShm        = "/dev/shm"
)

// defaultMounts are the kernel filesystems of every container; /sys and
// the cgroup filesystem are read-write only when privileged.
func defaultMounts(privileged bool) []specs.Mount {
	ro := "ro"
	if privileged {
		ro = "rw"
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", ro}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", ro}},
	}
}

// podShm is the container's /dev/shm: the pod's tmpfs, the host's with
// host IPC, or a private tmpfs.
func podShm(pod Pod, readonly bool) specs.Mount {
	src := pod.ShmPath
	if src == "" && pod.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtimeapi.NamespaceMode_NODE {
		src = devShm
	}
	if src == "" {
		return specs.Mount{Destination: devShm, Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}
	}
	return bindMount(src, devShm, readonly, "rprivate", "nosuid", "nodev", "noexec")
}

func bindMount(src, dst string, readonly bool, extra ...string) specs.Mount {
	opts := []string{"rbind"}
	opts = append(opts, extra...)
	if readonly {
		opts = append(opts, "ro")
	} else {
		opts = append(opts, "rw")
	}
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
}

// sortMounts orders mounts so that a parent is mounted before what is
// mounted inside it (fewer path components first), keeping the given order
// otherwise.
func sortMounts(m []specs.Mount) []specs.Mount {
	depth := func(p string) int {
		p = path.Clean(p)
		if p == "/" {
			return 0
		}
		return strings.Count(p, "/")
	}
	sort.SliceStable(m, func(i, j int) bool { return depth(m[i].Destination) < depth(m[j].Destination) })
	return m
}

// containerMounts builds the mounts of a container and the rootfs
// propagation its volumes need: the defaults, the CRI mounts (which replace
// a default at the same path), the pod's files and /dev/shm, and the image
// volumes, parents first.
func containerMounts(ctx context.Context, pod Pod, c Container, privileged, readonlyRoot bool) ([]specs.Mount, string, error) {
	var cri []specs.Mount
	covered := map[string]bool{}
	rootProp := ""
	for _, m := range c.Config.GetMounts() {
		sm, prop, err := criMount(ctx, m, c.ImageMounts)
		if err != nil {
			return nil, "", err
		}
		if covered[sm.Destination] {
			return nil, "", inval("mount path %s given twice", sm.Destination)
		}
		covered[sm.Destination] = true
		switch {
		case prop == "rshared":
			rootProp = "rshared"
		case prop == "rslave" && rootProp == "":
			rootProp = "rslave"
		}
		cri = append(cri, sm)
	}
	var out []specs.Mount
	for _, m := range defaultMounts(privileged) {
		if !covered[m.Destination] {
			out = append(out, m)
		}
	}
	out = append(out, cri...)
	for _, f := range []struct{ src, dst string }{
		{pod.HostnameFile, etcHostname}, {pod.HostsFile, etcHosts}, {pod.ResolvConfFile, etcResolvConf},
	} {
		if f.src != "" && !covered[f.dst] {
			out = append(out, podIDMapped(pod, bindMount(f.src, f.dst, readonlyRoot, "rprivate")))
		}
	}
	if !covered[devShm] {
		out = append(out, podIDMapped(pod, podShm(pod, false)))
	}
	vols, err := ImageVolumes(c)
	if err != nil {
		return nil, "", err
	}
	for _, v := range vols {
		out = append(out, podIDMapped(pod, bindMount(v.Source, v.Destination, false, "rprivate")))
	}
	return sortMounts(out), rootProp, nil
}

// ImageVolume is one of the image config's Volumes: the engine creates
// Source (and may copy the image's content at Destination into it) before
// the container is created.
type ImageVolume struct {
	Destination string
	Source      string
}

// ImageVolumes lists the image config's volumes that no CRI mount covers,
// each bound from its own subdirectory of c.VolumeDir (named by a digest
// of the path, so the same path always gets the same directory). With no
// VolumeDir the volumes stay in the writable layer and none is listed.
func ImageVolumes(c Container) ([]ImageVolume, error) {
	if c.VolumeDir == "" || len(c.Image.Volumes) == 0 {
		return nil, nil
	}
	if !filepath.IsAbs(c.VolumeDir) {
		return nil, inval("volume dir %q is not absolute", c.VolumeDir)
	}
	covered := map[string]bool{}
	for _, m := range c.Config.GetMounts() {
		covered[path.Clean(m.GetContainerPath())] = true
	}
	var out []ImageVolume
	for v := range c.Image.Volumes {
		if hasCtl(v) {
			return nil, inval("image volume %q", v)
		}
		dst := path.Clean("/" + v)
		if dst == "/" || covered[dst] {
			continue
		}
		covered[dst] = true
		sum := sha256.Sum256([]byte(dst))
		out = append(out, ImageVolume{Destination: dst, Source: filepath.Join(c.VolumeDir, hex.EncodeToString(sum[:16]))})
	}
	slices.SortFunc(out, func(a, b ImageVolume) int { return strings.Compare(a.Destination, b.Destination) })
	return out, nil
}

// criMount converts a CRI mount: the host path with its symlinks resolved
// (it must exist), read-only, recursive read-only, propagation and the
// extra options; an image mount binds the directory the engine mounted the
// image on. It returns the propagation the mount needs of the rootfs.
func criMount(ctx context.Context, m *runtimeapi.Mount, imageMounts map[string]string) (specs.Mount, string, error) {
	if err := checkMount(m); err != nil {
		return specs.Mount{}, "", err
	}
	dst := path.Clean(m.GetContainerPath())
	if m.GetSelinuxRelabel() {
		log.G(ctx).WithField("mount", dst).Debug("selinux_relabel is ignored")
	}
	if m.GetImage() != nil {
		return imageMount(m, dst, imageMounts)
	}
	src, err := resolveHostPath(m.GetHostPath())
	if err != nil {
		return specs.Mount{}, "", err
	}
	opts := []string{"rbind"}
	prop := "rprivate"
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		if err := checkSourcePropagation(src, false); err != nil {
			return specs.Mount{}, "", err
		}
		prop = "rslave"
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		if err := checkSourcePropagation(src, true); err != nil {
			return specs.Mount{}, "", err
		}
		prop = "rshared"
	}
	opts = append(opts, prop)
	if m.GetReadonly() {
		opts = append(opts, "ro")
	} else {
		opts = append(opts, "rw")
	}
	if m.GetRecursiveReadOnly() {
		opts = append(opts, "rro")
	}
	opts = append(opts, m.GetMountOptions()...)
	rootProp := ""
	if prop != "rprivate" {
		rootProp = prop
	}
	return mountIDMappings(m, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}), rootProp, nil
}

func imageMount(m *runtimeapi.Mount, dst string, imageMounts map[string]string) (specs.Mount, string, error) {
	root, ok := imageMounts[dst]
	if !ok || root == "" {
		return specs.Mount{}, "", fmt.Errorf("image volume at %s: the image is not mounted: %w", dst, errdefs.ErrNotImplemented)
	}
	src := root
	if sub := m.GetImageSubPath(); sub != "" {
		p, err := securejoin.SecureJoin(root, sub)
		if err != nil {
			return specs.Mount{}, "", inval("image volume at %s: sub path %q: %v", dst, sub, err)
		}
		if _, err := os.Stat(p); err != nil {
			return specs.Mount{}, "", fmt.Errorf("image volume at %s: sub path %q does not exist in the image: %w", dst, sub, errdefs.ErrNotFound)
		}
		src = p
	}
	// No idmapping here: in a pod with a user namespace the engine
	// mounted the image idmapped already (overlayfs is made of idmapped
	// layers; it cannot be idmapped again).
	opts := append([]string{"rbind", "rprivate", "ro", "nosuid", "nodev"}, m.GetMountOptions()...)
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}, "", nil
}

// resolveHostPath follows the host path's symlinks, as CRI asks; the
// path must exist (kubelet creates the directories it wants created).
func resolveHostPath(p string) (string, error) {
	src, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("mount host path %s does not exist: %w", p, errdefs.ErrNotFound)
		}
		return "", inval("mount host path %s: %v", p, err)
	}
	if !filepath.IsAbs(src) {
		if src, err = filepath.Abs(src); err != nil {
			return "", inval("mount host path %s: %v", p, err)
		}
	}
	return src, nil
}

// checkSourcePropagation checks that the mount holding src is shared
// (rshared volumes) or shared or a slave (rslave volumes): otherwise the
// propagation asked for could not happen.
func checkSourcePropagation(src string, needShared bool) error {
	mi, err := mountinfo.GetMounts(mountinfo.ParentsFilter(src))
	if err != nil {
		return fmt.Errorf("read mountinfo for %s: %w", src, err)
	}
	var best *mountinfo.Info
	for _, m := range mi {
		if best == nil || len(m.Mountpoint) > len(best.Mountpoint) {
			best = m
		}
	}
	if best == nil {
		return precondition("no mount found holding %s", src)
	}
	var shared, slave bool
	for _, f := range strings.Fields(best.Optional) {
		shared = shared || strings.HasPrefix(f, "shared:")
		slave = slave || strings.HasPrefix(f, "master:")
	}
	switch {
	case needShared && !shared:
		return precondition("path %s is mounted on %s but it is not a shared mount (bidirectional propagation needs one)", src, best.Mountpoint)
	case !needShared && !shared && !slave:
		return precondition("path %s is mounted on %s but it is not a shared or slave mount (host-to-container propagation needs one)", src, best.Mountpoint)
	}
	return nil
}
