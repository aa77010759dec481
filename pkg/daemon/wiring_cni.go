package daemon

import (
	"context"
	"path/filepath"

	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/netdrv/cni"
)

func newCNI(ctx context.Context, cfg *config.Config) (netdrv.Driver, error) {
	return cni.New(ctx, cni.Config{
		ConfDir:  cfg.Network.CNIConfDir,
		BinDirs:  cfg.Network.CNIBinDirs,
		CacheDir: filepath.Join(cfg.Root, "cni"),
	})
}
