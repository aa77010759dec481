package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
)

// applySysctls writes sysctls inside the namespace pinned at nsPath
// (nsType CLONE_NEWNET, CLONE_NEWIPC or CLONE_NEWUTS). /proc/sys shows the
// namespace of the thread that opens it, so the writes run on a thread that
// joins the namespace and is then thrown away (never returned to the Go
// scheduler).
func applySysctls(nsPath string, nsType int, sysctls map[string]string) error {
	if len(sysctls) == 0 {
		return nil
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		done <- func() error {
			fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("opening namespace %s: %v: %w", nsPath, err, errdefs.ErrInternal)
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, nsType); err != nil {
				return fmt.Errorf("joining namespace %s: %v: %w", nsPath, err, errdefs.ErrInternal)
			}
			for name, value := range sysctls {
				p := filepath.Join("/proc/sys", specgen.SysctlPath(name))
				if err := os.WriteFile(p, []byte(value), 0); err != nil {
					return fmt.Errorf("sysctl %s=%q: %v: %w", name, value, err, errdefs.ErrInvalidArgument)
				}
			}
			return nil
		}()
	}()
	return <-done
}
