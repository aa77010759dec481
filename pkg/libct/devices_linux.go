package libct

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

// specDevices lists the devices a container's /dev gets: the default
// ones, then the spec's (a path given twice: the last one), by clean path.
func specDevices(spec *specs.Spec) (order []string, devs map[string]specs.LinuxDevice) {
	devs = map[string]specs.LinuxDevice{}
	add := func(d specs.LinuxDevice) {
		p := filepath.Clean("/" + d.Path)
		if _, ok := devs[p]; !ok {
			order = append(order, p)
		}
		devs[p] = d
	}
	for _, d := range defaultDevices {
		mode := os.FileMode(0o666)
		d.FileMode = &mode
		add(d)
	}
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			add(d)
		}
	}
	return order, devs
}

func setupDev(root *os.File, spec *specs.Spec, userns bool) error {
	order, devs := specDevices(spec)
	for _, p := range order {
		if err := createDevice(root, p, devs[p], userns); err != nil {
			return err
		}
	}
	devDir, err := pathrs.MkdirAllHandle(root, "/dev", 0o755)
	if err != nil {
		return fmt.Errorf("open /dev: %w", err)
	}
	defer devDir.Close()
	dfd := int(devDir.Fd())
	links := [][2]string{
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "core"})
	}
	for _, l := range links {
		if err := unix.Symlinkat(l[0], dfd, l[1]); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("symlink /dev/%s: %w", l[1], err)
		}
	}
	// /dev/ptmx points at the container's own devpts instance.
	var st unix.Stat_t
	if unix.Fstatat(dfd, "pts", &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		_ = unix.Unlinkat(dfd, "ptmx", 0)
		if err := unix.Symlinkat("pts/ptmx", dfd, "ptmx"); err != nil {
			return fmt.Errorf("symlink /dev/ptmx: %w", err)
		}
	}
	return nil
}

// deviceType is the file type of a spec device's type (0: none).
func deviceType(t string) uint32 {
	switch t {
	case "c", "u":
		return unix.S_IFCHR
	case "b":
		return unix.S_IFBLK
	case "p":
		return unix.S_IFIFO
	}
	return 0
}

func createDevice(root *os.File, path string, d specs.LinuxDevice, userns bool) error {
	typ := deviceType(d.Type)
	if typ == 0 {
		return fmt.Errorf("device %s: type %q: %w", path, d.Type, errdefs.ErrInvalidArgument)
	}
	dir, base := filepath.Split(path)
	parent, err := pathrs.MkdirAllHandle(root, dir, 0o755)
	if err != nil {
		return fmt.Errorf("device %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	defer parent.Close()
	pfd := int(parent.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return fmt.Errorf("device %s is a symlink in the rootfs: %w", path, errdefs.ErrInvalidArgument)
		}
		if st.Mode&unix.S_IFMT == typ && st.Rdev == unix.Mkdev(uint32(d.Major), uint32(d.Minor)) {
			return nil
		}
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return fmt.Errorf("replace device %s: %w", path, err)
		}
	}
	mode := uint32(0o666)
	if d.FileMode != nil {
		mode = uint32(d.FileMode.Perm())
	}
	if userns {
		// mknod is not allowed in a user namespace: bind the host node.
		fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("device %s: %w", path, err)
		}
		unix.Close(fd)
		t, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("device %s: %w", path, err)
		}
		defer unix.Close(t)
		if err := unix.Mount(path, procFd(t), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind device %s: %w", path, err)
		}
		return nil
	}
	if err := unix.Mknodat(pfd, base, typ|mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
		return fmt.Errorf("mknod %s: %w", path, err)
	}
	uid, gid := 0, 0
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}
