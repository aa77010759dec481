package daemon

import (
	"context"
	"fmt"

	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/netdrv"
)

func newCNI(ctx context.Context, cfg *config.Config) (netdrv.Driver, error) {
	return nil, fmt.Errorf("network driver cni: %w", errdefs.ErrNotImplemented)
}
