package execdrv

import (
	"context"
	"errors"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/shim-cri/shim/pkg/libct"
)

// What the engine needs of pkg/libct besides a driver: the native
// driver's features, a pod's user namespace holder, killing a container's
// cgroup when its runtime state cannot be trusted, and the cgroup of the
// monitor's own infra process. The engine
// reaches libct only through this package.

// NativeFeatures is the OCI features document of the native driver.
func NativeFeatures() *features.Features { return libct.Features() }

// Features implements Driver.
func (n *Native) Features(context.Context) (*features.Features, error) {
	return NativeFeatures(), nil
}

// NSHolder keeps a new user namespace, with its id mappings, and the
// namespaces it owns alive until Close, so the caller can pin them (see
// HoldNamespaces).
type NSHolder struct{ h *libct.NSHolder }

// HoldNamespaces starts a holder process in a new user namespace with the
// given id mappings and, for the kinds in flags (CLONE_NEWNET,
// CLONE_NEWIPC, CLONE_NEWUTS), new namespaces owned by it. exe is a binary
// that links pkg/libct/nsenter; "" is this process's own.
func HoldNamespaces(ctx context.Context, exe string, flags uint32, uidMap, gidMap []specs.LinuxIDMapping) (*NSHolder, error) {
	h, err := libct.HoldNamespaces(ctx, exe, flags, uidMap, gidMap)
	if err != nil {
		return nil, err
	}
	return &NSHolder{h: h}, nil
}

// Path is the /proc path of one of the held namespaces ("user", "net",
// "ipc", "uts"), valid until Close.
func (n *NSHolder) Path(kind string) string { return n.h.Path(kind) }

// Close releases the holder: the namespaces live on only where they are
// pinned or used.
func (n *NSHolder) Close() error { return n.h.Close() }

// KillCgroup SIGKILLs every process in the cgroup of the container of
// bundle (its config.json names the cgroup) and waits, bounded, until none
// runs; a cgroup that is gone is not an error. It is for a container whose
// runtime state is gone or cannot be trusted: the cgroup still finds its
// processes, whichever driver made it.
func KillCgroup(bundle, id string) error {
	spec, err := readBundleSpec(bundle)
	if err != nil {
		return err
	}
	return libct.KillCgroup(spec, id)
}

// RemoveCgroup kills what is left in the cgroup of the process of bundle
// (its config.json names the cgroup) and removes the cgroup: for the
// monitor's own infra process, whose cgroup the daemon made
// (libct.CreateCgroup). A bundle or cgroup that is gone is not an error.
func RemoveCgroup(ctx context.Context, bundle, id string) error {
	spec, err := readBundleSpec(bundle)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return libct.RemoveCgroup(ctx, spec, id)
}

// CreateCgroup makes the cgroup spec names for a process no driver starts
// (the monitor's own infra process) and returns the cgroup.procs files it
// joins; RemoveCgroup removes it.
func CreateCgroup(spec *specs.Spec, id string) ([]string, error) { return libct.CreateCgroup(spec, id) }
