package specgen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func i64(v int64) *int64 { return &v }

// DefaultAllowedDevices are the device cgroup rules every container gets
// after deny-all: the nodes the runtime creates in /dev, the pty devices
// and tun (the list runc and containerd use).
var DefaultAllowedDevices = []specs.LinuxDeviceCgroup{
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"},    // null
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(5), Access: "rwm"},    // zero
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(7), Access: "rwm"},    // full
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(8), Access: "rwm"},    // random
	{Allow: true, Type: "c", Major: i64(1), Minor: i64(9), Access: "rwm"},    // urandom
	{Allow: true, Type: "c", Major: i64(5), Minor: i64(0), Access: "rwm"},    // tty
	{Allow: true, Type: "c", Major: i64(5), Minor: i64(1), Access: "rwm"},    // console
	{Allow: true, Type: "c", Major: i64(5), Minor: i64(2), Access: "rwm"},    // ptmx
	{Allow: true, Type: "c", Major: i64(136), Minor: nil, Access: "rwm"},     // pts/*
	{Allow: true, Type: "c", Major: i64(10), Minor: i64(200), Access: "rwm"}, // net/tun
}

// hostDevRoot is where privileged containers' devices come from (a
// variable only so that tests can prove it is not walked otherwise).
var hostDevRoot = "/dev"

// containerDevices returns the devices of the container and its device
// cgroup rules. CRI devices are looked up on the host (a directory adds
// every device under it); a privileged container gets every host device
// and may use any.
func containerDevices(devs []*runtimeapi.Device, privileged bool, o Options) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	var out []specs.LinuxDevice
	var allow []specs.LinuxDeviceCgroup
	seen := map[string]int{}
	addDev := func(d specs.LinuxDevice) {
		if i, ok := seen[d.Path]; ok {
			out[i] = d
			return
		}
		seen[d.Path] = len(out)
		out = append(out, d)
	}
	if privileged {
		host, err := hostDevices(hostDevRoot)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range host {
			addDev(d)
		}
	}
	for _, d := range devs {
		if err := checkDevice(d); err != nil {
			return nil, nil, err
		}
		found, err := devicesFromPath(d.GetHostPath(), path.Clean(d.GetContainerPath()))
		if err != nil {
			return nil, nil, err
		}
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		for _, f := range found {
			addDev(f)
			allow = append(allow, specs.LinuxDeviceCgroup{
				Allow: true, Type: f.Type, Major: i64(f.Major), Minor: i64(f.Minor), Access: perms,
			})
		}
	}
	return out, deviceRules(allow, privileged, o), nil
}

// deviceRules is deny-all, the default allow list, then extra; or allow-all
// for a privileged container.
func deviceRules(extra []specs.LinuxDeviceCgroup, privileged bool, o Options) []specs.LinuxDeviceCgroup {
	if privileged {
		return []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	}
	def := o.AllowedDevices
	if def == nil {
		def = DefaultAllowedDevices
	}
	rules := []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	for _, r := range def {
		rules = append(rules, copyRule(r))
	}
	return append(rules, extra...)
}

func copyRule(r specs.LinuxDeviceCgroup) specs.LinuxDeviceCgroup {
	if r.Major != nil {
		r.Major = i64(*r.Major)
	}
	if r.Minor != nil {
		r.Minor = i64(*r.Minor)
	}
	return r
}

var errNotDevice = errors.New("not a device")

// deviceFromPath describes the char or block device at p (not following
// a symlink) as the container device ctrPath.
func deviceFromPath(p, ctrPath string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return specs.LinuxDevice{}, err
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, errNotDevice
	}
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	rdev := uint64(st.Rdev) //nolint:unconvert // Rdev's type differs between architectures
	return specs.LinuxDevice{
		Path: ctrPath, Type: typ,
		Major: int64(unix.Major(rdev)), Minor: int64(unix.Minor(rdev)),
		FileMode: &mode, UID: &uid, GID: &gid,
	}, nil
}

// devicesFromPath looks up a CRI device: host symlinks are followed; a
// directory yields every device below it, under the container path.
func devicesFromPath(hostPath, ctrPath string) ([]specs.LinuxDevice, error) {
	real, err := filepath.EvalSymlinks(hostPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("device %s does not exist: %w", hostPath, errdefs.ErrNotFound)
		}
		return nil, inval("device %s: %v", hostPath, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w: %w", hostPath, err, errdefs.ErrNotFound)
	}
	if !fi.IsDir() {
		d, err := deviceFromPath(real, ctrPath)
		if err != nil {
			return nil, inval("device %s: %v", hostPath, err)
		}
		return []specs.LinuxDevice{d}, nil
	}
	var out []specs.LinuxDevice
	err = filepath.WalkDir(real, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(real, p)
		if err != nil {
			return err
		}
		d, err := deviceFromPath(p, path.Join(ctrPath, filepath.ToSlash(rel)))
		if errors.Is(err, errNotDevice) || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("device directory %s: %w", hostPath, err)
	}
	if len(out) == 0 {
		return nil, inval("device directory %s holds no devices", hostPath)
	}
	return out, nil
}

// hostDevices lists the host's char and block devices for a privileged
// container, skipping what the container gets on its own (pts, shm,
// mqueue, the console) and the container managers' private directories.
func hostDevices(root string) ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() {
			switch e.Name() {
			case "pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev":
				if p != root {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if e.Name() == "console" || e.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		d, err := deviceFromPath(p, path.Join("/dev", filepath.ToSlash(rel)))
		if errors.Is(err, errNotDevice) || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list host devices: %w", err)
	}
	return out, nil
}
