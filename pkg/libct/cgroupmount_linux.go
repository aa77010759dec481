package libct

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// cgroup mounts: a tmpfs with one bind mount per hierarchy of the
// container's cgroup (v1), or cgroup2 / a bind of the container's cgroup.
func mountCgroup(root *os.File, cfg *initConfig, m specs.Mount, dest string, pm parsedMount) error {
	ro := pm.flags&unix.MS_RDONLY != 0
	target, err := openDest(root, dest, true)
	if err != nil {
		return err
	}
	defer target.Close()
	tpath := procFd(int(target.Fd()))
	base := pm.flags &^ (unix.MS_RDONLY | unix.MS_BIND | unix.MS_REC)
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	unified := len(mounts) == 1 && mounts[0].FSType == "cgroup2"
	if unified {
		if cfg.NewCgroupNS {
			err = unix.Mount("cgroup2", tpath, "cgroup2", base, "")
		} else {
			err = unix.Mount(filepath.Join(mounts[0].Mountpoint, cfg.CgroupPath), tpath, "", unix.MS_BIND|unix.MS_REC, "")
		}
		if err != nil {
			return fmt.Errorf("mount cgroup2 on %s: %w", dest, err)
		}
		if ro {
			f, err := reopenDest(root, dest)
			if err != nil {
				return err
			}
			defer f.Close()
			return remountRO(procFd(int(f.Fd())))
		}
		return nil
	}
	if err := unix.Mount("tmpfs", tpath, "tmpfs", base, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dest, err)
	}
	for _, mi := range mounts {
		if !strings.HasPrefix(mi.Mountpoint, "/sys/fs/cgroup/") {
			continue
		}
		name := filepath.Base(mi.Mountpoint)
		sub := filepath.Join(dest, name)
		t, err := openDest(root, sub, true)
		if err != nil {
			return err
		}
		tp := procFd(int(t.Fd()))
		if cfg.NewCgroupNS {
			// A real cgroup mount: its root is the cgroup namespace
			// root, the container's own cgroup.
			if mi.FSType == "cgroup2" {
				err = unix.Mount("cgroup2", tp, "cgroup2", base, "")
			} else {
				err = unix.Mount("cgroup", tp, "cgroup", base, cgroupKey(mi.VFSOptions))
			}
		} else {
			// Bind the container's cgroup of this hierarchy.
			src := filepath.Join(mi.Mountpoint, cfg.CgroupPath)
			if _, serr := os.Stat(src); serr != nil {
				t.Close()
				continue
			}
			err = unix.Mount(src, tp, "", unix.MS_BIND|unix.MS_REC, "")
		}
		t.Close()
		if err != nil {
			return fmt.Errorf("mount cgroup %s on %s: %w", name, sub, err)
		}
		if err := applyMountAttrs(root, sub, parsedMount{isBind: true, flags: base | roFlag(ro)}); err != nil {
			return err
		}
	}
	if ro {
		f, err := reopenDest(root, dest)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.Mount("", procFd(int(f.Fd())), "", unix.MS_REMOUNT|unix.MS_RDONLY|base, "mode=755"); err != nil {
			return fmt.Errorf("remount %s read-only: %w", dest, err)
		}
	}
	return nil
}

func roFlag(ro bool) uintptr {
	if ro {
		return unix.MS_RDONLY
	}
	return 0
}

// cgroupKey turns the super options of a v1 cgroup mount into the
// controller list as /proc/self/cgroup shows it ("cpu", "name=systemd").
func cgroupKey(vfsOpts string) string {
	var keys []string
	for _, o := range strings.Split(vfsOpts, ",") {
		switch {
		case o == "rw" || o == "ro" || strings.HasPrefix(o, "release_agent") || o == "clone_children" ||
			o == "noprefix" || o == "xattr" || o == "cpuset_v2_mode" || o == "all":
		default:
			keys = append(keys, o)
		}
	}
	return strings.Join(keys, ",")
}
