package monitor

import (
	"fmt"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Main is `shim monitor`. The monitor is C: it runs in the constructor of
// binaries that import pkg/monitor/cmon, before the Go runtime, and never
// gets here. Reaching Main means this binary was built without it.
func Main(args []string) error {
	err := fmt.Errorf("monitor: this binary was built without the C monitor (pkg/monitor/cmon): %w", errdefs.ErrNotImplemented)
	Ready(err)
	return err
}
