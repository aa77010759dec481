package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/internal/binfile"
	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/netdrv/bridge"
)

// newNetwork builds the configured pod network driver; nil for "none".
func newNetwork(ctx context.Context, cfg *config.Config, db *bolt.DB) (netdrv.Driver, error) {
	switch cfg.Network.Driver {
	case "none":
		return nil, nil
	case "bridge":
		return bridge.New(ctx, bridge.Config{Bridge: cfg.Network.Bridge, CIDR: cfg.Network.PodCIDR,
			MTU: cfg.Network.MTU, Table: cfg.Network.NFTTable, VethPrefix: cfg.Network.VethPrefix}, db)
	case "cni":
		return newCNI(ctx, cfg)
	}
	return nil, fmt.Errorf("network driver %q: %w", cfg.Network.Driver, errdefs.ErrInvalidArgument)
}

// runtimeExe returns the binary monitors run: the embedded lean runtime,
// written once per content under <state>/bin, or this executable.
func runtimeExe(state string, embedded []byte) (string, error) {
	if len(embedded) == 0 {
		return os.Executable()
	}
	return unpackBinary(state, "shim-runtime", embedded)
}

// unpackBinary writes an embedded binary once per content to
// <state>/bin/<name>-<hash> and returns its path ("" for none).
func unpackBinary(state, name string, embedded []byte) (string, error) {
	if len(embedded) == 0 {
		return "", nil
	}
	// The embedded copy is only read here: let the kernel drop its pages
	// from the daemon's memory afterwards (they are clean file pages).
	defer dropPages(embedded)
	sum := sha256.Sum256(embedded)
	dir := filepath.Join(state, "bin")
	path := filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:8]))
	if fileSum(path) == sum {
		return path, nil
	}
	return binfile.Write(dir, filepath.Base(path), embedded)
}

// fileSum hashes a file without holding it in memory.
func fileSum(path string) (sum [32]byte) {
	f, err := os.Open(path)
	if err != nil {
		return sum
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum
	}
	copy(sum[:], h.Sum(nil))
	return sum
}

// dropPages tells the kernel the pages of b (read-only data of the
// binary) are not needed any more.
func dropPages(b []byte) {
	if len(b) == 0 {
		return
	}
	page := os.Getpagesize()
	skip := (page - int(uintptr(unsafe.Pointer(&b[0])))%page) % page
	if len(b) <= skip+page {
		return
	}
	b = b[skip:]
	unix.Madvise(b[:len(b)-len(b)%page], unix.MADV_DONTNEED)
}
