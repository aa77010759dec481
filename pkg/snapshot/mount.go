package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// mountFlags maps mount(8) flag options to (set, clear) flags.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro":          {false, unix.MS_RDONLY},
	"rw":          {true, unix.MS_RDONLY},
	"bind":        {false, unix.MS_BIND},
	"rbind":       {false, unix.MS_BIND | unix.MS_REC},
	"nosuid":      {false, unix.MS_NOSUID},
	"suid":        {true, unix.MS_NOSUID},
	"nodev":       {false, unix.MS_NODEV},
	"dev":         {true, unix.MS_NODEV},
	"noexec":      {false, unix.MS_NOEXEC},
	"exec":        {true, unix.MS_NOEXEC},
	"sync":        {false, unix.MS_SYNCHRONOUS},
	"async":       {true, unix.MS_SYNCHRONOUS},
	"dirsync":     {false, unix.MS_DIRSYNC},
	"noatime":     {false, unix.MS_NOATIME},
	"atime":       {true, unix.MS_NOATIME},
	"nodiratime":  {false, unix.MS_NODIRATIME},
	"diratime":    {true, unix.MS_NODIRATIME},
	"relatime":    {false, unix.MS_RELATIME},
	"norelatime":  {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
	"remount":     {false, unix.MS_REMOUNT},
	"defaults":    {false, 0},
}

var propagationFlags = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

type parsedMount struct {
	flags       uintptr
	propagation uintptr
	data        []string
}

func parseOptions(opts []string) parsedMount {
	var p parsedMount
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				p.flags &^= f.flag
			} else {
				p.flags |= f.flag
			}
			continue
		}
		if f, ok := propagationFlags[o]; ok {
			p.propagation |= f
			continue
		}
		p.data = append(p.data, o)
	}
	return p
}

// MountAll mounts mounts, in order, on target (an existing directory). A
// later mount stacks on an earlier one. On failure the mounts already made
// are undone.
//
// Overlay mounts whose option string would exceed the kernel's one-page
// limit (deep layer chains under a long root) are made with lowerdir,
// upperdir and workdir relative to their common parent directory, from a
// thread with a private working directory (unshare(CLONE_FS) + chdir), so
// the returned Mounts can keep absolute paths.
func MountAll(mounts []Mount, target string) (retErr error) {
	abs, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	for i, m := range mounts {
		if err := mountOne(m, abs); err != nil {
			for j := 0; j < i; j++ {
				_ = unix.Unmount(abs, unix.MNT_DETACH)
			}
			return fmt.Errorf("mount %s %s on %s: %w", m.Type, m.Source, abs, err)
		}
	}
	return nil
}

func mountOne(m Mount, target string) error {
	p := parseOptions(m.Options)
	if m.Type == "bind" {
		p.flags |= unix.MS_BIND
	}
	if p.flags&unix.MS_BIND != 0 {
		return mountBind(m.Source, target, p)
	}
	data := strings.Join(p.data, ",")
	var err error
	if m.Type == "overlay" && len(data) >= unix.Getpagesize() {
		err = mountOverlayCompact(m.Source, target, p.flags, p.data)
	} else {
		err = unix.Mount(m.Source, target, m.Type, p.flags, data)
	}
	if err != nil {
		return err
	}
	if p.propagation != 0 {
		if err := unix.Mount("", target, "", p.propagation, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return err
		}
	}
	return nil
}

// mountBind bind mounts and then applies the per-mount flags (ro, nosuid,
// ...) with a remount, since MS_BIND ignores them.
func mountBind(source, target string, p parsedMount) error {
	if err := unix.Mount(source, target, "", p.flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
		return err
	}
	if rest := p.flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); rest != 0 {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|rest, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return err
		}
	}
	if p.propagation != 0 {
		if err := unix.Mount("", target, "", p.propagation, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return err
		}
	}
	return nil
}

// compactOverlayData rewrites the lowerdir, upperdir and workdir options of
// an overlay mount relative to the longest directory all of them share. It
// returns that directory and the new option string.
func compactOverlayData(data []string) (string, string, error) {
	var paths []string
	for _, o := range data {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			paths = append(paths, strings.Split(v, ":")...)
		case "upperdir", "workdir":
			paths = append(paths, v)
		}
	}
	if len(paths) == 0 {
		return "", "", fmt.Errorf("overlay options exceed a page and name no layers: %w", errdefs.ErrInvalidArgument)
	}
	prefix := filepath.Dir(paths[0])
	for _, p := range paths[1:] {
		for prefix != "/" && !strings.HasPrefix(p, prefix+"/") {
			prefix = filepath.Dir(prefix)
		}
	}
	if prefix == "/" || !filepath.IsAbs(prefix) {
		return "", "", fmt.Errorf("overlay options exceed a page and the layers share no parent directory: %w", errdefs.ErrInvalidArgument)
	}
	rel := func(p string) string { return strings.TrimPrefix(p, prefix+"/") }
	out := make([]string, 0, len(data))
	for _, o := range data {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			ls := strings.Split(v, ":")
			for i := range ls {
				ls[i] = rel(ls[i])
			}
			o = "lowerdir=" + strings.Join(ls, ":")
		case "upperdir", "workdir":
			o = k + "=" + rel(v)
		}
		out = append(out, o)
	}
	s := strings.Join(out, ",")
	if len(s) >= unix.Getpagesize() {
		return "", "", fmt.Errorf("overlay options are %d bytes even with relative layer paths (too many layers): %w", len(s), errdefs.ErrInvalidArgument)
	}
	return prefix, s, nil
}

func mountOverlayCompact(source, target string, flags uintptr, data []string) error {
	dir, opts, err := compactOverlayData(data)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		// The thread gets its own working directory. It is never
		// unlocked, so the runtime discards it when this goroutine ends
		// instead of reusing a thread with a changed cwd.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			errc <- &os.PathError{Op: "chdir", Path: dir, Err: err}
			return
		}
		errc <- unix.Mount(source, target, "overlay", flags, opts)
	}()
	return <-errc
}

// UnmountAll unmounts everything mounted on target or below it, deepest
// first, until target is no longer a mount point. A missing target or one
// with nothing mounted is not an error.
func UnmountAll(target string) error {
	abs, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	} else if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for attempt := 0; attempt < 100; attempt++ {
		mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(abs))
		if err != nil {
			return err
		}
		if len(mounts) == 0 {
			return nil
		}
		// Deepest path first; among mounts stacked on one path the
		// latest (highest ID) first.
		sort.Slice(mounts, func(i, j int) bool {
			if len(mounts[i].Mountpoint) != len(mounts[j].Mountpoint) {
				return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint)
			}
			return mounts[i].ID > mounts[j].ID
		})
		for _, m := range mounts {
			err := unix.Unmount(m.Mountpoint, 0)
			switch err {
			case nil, unix.EINVAL, unix.ENOENT:
			case unix.EBUSY:
				if attempt < 50 {
					time.Sleep(10 * time.Millisecond)
					break
				}
				if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
					return &os.PathError{Op: "umount", Path: m.Mountpoint, Err: err}
				}
			default:
				return &os.PathError{Op: "umount", Path: m.Mountpoint, Err: err}
			}
		}
	}
	return fmt.Errorf("unmount %s: still mounted: %w", abs, errdefs.ErrUnavailable)
}
