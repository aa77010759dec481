//go:build shim_init

package libct

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// The init binary (cmd/shim-init) only runs container inits and exec'd
// processes, which the parent has put in their cgroup: it links no cgroup
// manager, and a call that needs one fails.

func cgroupVersion() int { return 0 }

func newCgroup(int, string, *specs.LinuxResources) (cgroupManager, error) {
	return nil, fmt.Errorf("the init binary manages no cgroups: %w", errdefs.ErrNotImplemented)
}

func loadCgroup(int, string) (cgroupManager, error) {
	return nil, fmt.Errorf("the init binary manages no cgroups: %w", errdefs.ErrNotImplemented)
}
