package nspin

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// SetSysctls writes sysctls inside the namespace of kind (Net, IPC or
// UTS) pinned at path. Keys are paths under /proc/sys
// ("net/ipv4/ip_forward"); a value the kernel refuses is
// ErrInvalidArgument. /proc/sys shows the namespaces of the thread that
// opens a file, so the writes run inside Do.
func SetSysctls(kind, path string, sysctls map[string]string) error {
	if len(sysctls) == 0 {
		return nil
	}
	for p := range sysctls {
		if !filepath.IsLocal(p) {
			return fmt.Errorf("nspin: sysctl path %q is not below /proc/sys: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return Do(kind, path, func() error {
		for p, value := range sysctls {
			if err := os.WriteFile(filepath.Join("/proc/sys", p), []byte(value), 0); err != nil {
				return fmt.Errorf("sysctl %s=%q: %w: %w", p, value, err, errdefs.ErrInvalidArgument)
			}
		}
		return nil
	})
}

// MountShm makes the directory path (0755) and mounts on it a tmpfs of
// size bytes, mode 1777, nosuid, nodev and noexec: the /dev/shm of a pod
// with its own IPC namespace, shared by its containers. The caller
// unmounts it (MNT_DETACH) when the pod stops.
func MountShm(path string, size int64) error {
	if err := os.Mkdir(path, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("shm", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		fmt.Sprintf("mode=1777,size=%d", size)); err != nil {
		return fmt.Errorf("mounting the pod's /dev/shm: %w", err)
	}
	return nil
}
