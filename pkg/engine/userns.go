package engine

import (
	"context"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// podUserns returns the pod's user namespace options when it has its own
// user namespace (kubelet's hostUsers: false), else nil.
func podUserns(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.UserNamespace {
	u := nsOptions(cfg).GetUsernsOptions()
	if u.GetMode() != runtimeapi.NamespaceMode_POD {
		return nil
	}
	return u
}

// holdUserns makes the pod's user namespace with kubelet's mappings and,
// owned by it, the net and uts (without host network) and ipc (without
// host IPC) namespaces the pod pins; nil when the pod has no user
// namespace. The caller pins what it needs and closes the holder.
func (r *Runtime) holdUserns(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, hostNet, hostIPC bool) (*execdrv.NSHolder, error) {
	u := podUserns(cfg)
	if u == nil {
		return nil, nil
	}
	var flags uint32
	if !hostNet {
		flags |= unix.CLONE_NEWNET | unix.CLONE_NEWUTS
	}
	if !hostIPC {
		flags |= unix.CLONE_NEWIPC
	}
	h, err := execdrv.HoldNamespaces(ctx, r.o.RuntimeExe, flags, specMappings(u.GetUids()), specMappings(u.GetGids()))
	if err != nil {
		return nil, fmt.Errorf("the pod's user namespace: %w", err)
	}
	return h, nil
}

func specMappings(m []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	out := make([]specs.LinuxIDMapping, 0, len(m))
	for _, x := range m {
		out = append(out, specs.LinuxIDMapping{ContainerID: x.GetContainerId(), HostID: x.GetHostId(), Size: x.GetLength()})
	}
	return out
}

// mountSnapshot mounts a container's snapshot (its root filesystem, or the
// image of an image volume) on target: idmapped with the pod's user
// namespace when the pod has one, so the image's files are the container's
// own (see snapshot.MountAllIDMapped).
func (r *Runtime) mountSnapshot(sb *Sandbox, mounts []snapshot.Mount, target string) error {
	v := sb.view()
	u := podUserns(v.config)
	if v.UserNS == "" || u == nil {
		return snapshot.MountAll(mounts, target)
	}
	fd, err := unix.Open(v.UserNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("the pod's user namespace %s: %w: %w", v.UserNS, err, errdefs.ErrFailedPrecondition)
	}
	defer unix.Close(fd)
	return snapshot.MountAllIDMapped(mounts, target, snapshot.IDMap{UsernsFd: fd,
		UID: hostID(u.GetUids()), GID: hostID(u.GetGids())})
}

// hostID is the host id container id 0 maps to (validation requires the
// mapping).
func hostID(m []*runtimeapi.IDMapping) uint32 {
	for _, x := range m {
		if x.GetContainerId() == 0 {
			return x.GetHostId()
		}
	}
	return 0
}
