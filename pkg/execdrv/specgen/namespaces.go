package specgen

import (
	"fmt"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

type nsResult struct {
	list           []specs.LinuxNamespace
	newUTS         bool
	uidMap, gidMap []specs.LinuxIDMapping
}

func precondition(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrFailedPrecondition)...)
}

func joinNS(t specs.LinuxNamespaceType, path string) (specs.LinuxNamespace, error) {
	if !filepath.IsAbs(path) || hasCtl(path) {
		return specs.LinuxNamespace{}, inval("%s namespace path %q is not absolute", t, path)
	}
	return specs.LinuxNamespace{Type: t, Path: path}, nil
}

// namespaces lists the namespaces of a pod's container (or, with infra, of
// its infra process, which creates the pod's pid namespace). Host network,
// IPC and PID have no entry; network and IPC join the pod's pinned files;
// UTS follows the network; mount and cgroup namespaces are new.
func namespaces(pod Pod, pidMode runtimeapi.NamespaceMode, targetPID string, infra bool) (nsResult, error) {
	var r nsResult
	nso := pod.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	add := func(t specs.LinuxNamespaceType, path string) error {
		if path == "" {
			r.list = append(r.list, specs.LinuxNamespace{Type: t})
			return nil
		}
		n, err := joinNS(t, path)
		if err != nil {
			return err
		}
		r.list = append(r.list, n)
		return nil
	}

	switch {
	case infra:
		if err := add(specs.PIDNamespace, ""); err != nil {
			return r, err
		}
	case pidMode == runtimeapi.NamespaceMode_POD:
		if pod.PIDNS == "" {
			return r, precondition("pod %s shares a pid namespace but none is given (is its infra process running?)", pod.ID)
		}
		if err := add(specs.PIDNamespace, pod.PIDNS); err != nil {
			return r, err
		}
	case pidMode == runtimeapi.NamespaceMode_CONTAINER:
		if err := add(specs.PIDNamespace, ""); err != nil {
			return r, err
		}
	case pidMode == runtimeapi.NamespaceMode_TARGET:
		if targetPID == "" {
			return r, precondition("pid namespace mode TARGET: the target container's pid namespace is not given")
		}
		if err := add(specs.PIDNamespace, targetPID); err != nil {
			return r, err
		}
	case pidMode == runtimeapi.NamespaceMode_NODE:
	default:
		return r, inval("pid namespace mode %d", pidMode)
	}

	if nso.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		if pod.NetNS == "" {
			return r, precondition("pod %s: network namespace not pinned", pod.ID)
		}
		if err := add(specs.NetworkNamespace, pod.NetNS); err != nil {
			return r, err
		}
		if err := add(specs.UTSNamespace, pod.UTSNS); err != nil {
			return r, err
		}
		r.newUTS = pod.UTSNS == ""
	}
	if nso.GetIpc() != runtimeapi.NamespaceMode_NODE {
		if pod.IPCNS == "" {
			return r, precondition("pod %s: IPC namespace not pinned", pod.ID)
		}
		if err := add(specs.IPCNamespace, pod.IPCNS); err != nil {
			return r, err
		}
	}
	_ = add(specs.MountNamespace, "")
	_ = add(specs.CgroupNamespace, "")

	if u := nso.GetUsernsOptions(); u != nil && u.GetMode() == runtimeapi.NamespaceMode_POD {
		if err := checkUserns(u); err != nil {
			return r, err
		}
		if pod.UserNS != "" {
			if err := add(specs.UserNamespace, pod.UserNS); err != nil {
				return r, err
			}
		} else {
			_ = add(specs.UserNamespace, "")
			r.uidMap, r.gidMap = idMappings(u.GetUids()), idMappings(u.GetGids())
		}
	}
	return r, nil
}

func idMappings(m []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	out := make([]specs.LinuxIDMapping, 0, len(m))
	for _, x := range m {
		out = append(out, specs.LinuxIDMapping{ContainerID: x.GetContainerId(), HostID: x.GetHostId(), Size: x.GetLength()})
	}
	return out
}

// checkUserns checks a pod's user namespace options: mode NODE (or none),
// or POD with exactly one uid and one gid mapping that maps container id 0.
func checkUserns(u *runtimeapi.UserNamespace) error {
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return inval("user namespace mode NODE with id mappings")
		}
		return nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return inval("user namespace mode %s: only POD and NODE are supported", u.GetMode())
	}
	for _, m := range []struct {
		what string
		maps []*runtimeapi.IDMapping
	}{{"uid", u.GetUids()}, {"gid", u.GetGids()}} {
		if len(m.maps) != 1 {
			return inval("user namespace: want exactly one %s mapping, got %d", m.what, len(m.maps))
		}
		x := m.maps[0]
		if x.GetContainerId() != 0 {
			return inval("user namespace: the %s mapping must map container id 0", m.what)
		}
		if x.GetLength() == 0 || uint64(x.GetHostId())+uint64(x.GetLength()) > 1<<32-1 {
			return inval("user namespace: %s mapping %d+%d is out of range", m.what, x.GetHostId(), x.GetLength())
		}
	}
	return nil
}
