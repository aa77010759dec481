package specgen

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// User namespaces (kubelet's hostUsers: false): the pod has one user
// namespace (NamespaceMode POD) with kubelet's uid and gid mappings, which
// every container of the pod joins (Pod.UserNS, pinned by the engine with
// the pod's net, ipc and uts namespaces, which it owns). The container's
// root filesystem is idmapped by the engine; the bind mounts the runtime
// provides (hostname, hosts, resolv.conf, /dev/shm, image VOLUMEs) are
// idmapped with the pod's mappings, so what the host owns as uid 0 the
// container sees as its root; kubelet's volumes are idmapped when their CRI
// Mount carries uid and gid mappings (kubelet sends the pod's), except
// image volumes, which the engine mounts idmapped itself.

// podUserns returns the pod's user namespace options when the pod has its
// own user namespace (mode POD), else nil.
func podUserns(pod Pod) *runtimeapi.UserNamespace {
	u := pod.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	if u == nil || u.GetMode() != runtimeapi.NamespaceMode_POD {
		return nil
	}
	return u
}

// podIDMapped makes a bind mount the runtime provides idmapped with the
// pod's mappings when the pod has a user namespace.
func podIDMapped(pod Pod, m specs.Mount) specs.Mount {
	u := podUserns(pod)
	if u == nil || m.Type != "bind" {
		return m
	}
	m.Options = append(m.Options, "idmap")
	m.UIDMappings, m.GIDMappings = idMappings(u.GetUids()), idMappings(u.GetGids())
	return m
}

// mountIDMappings converts a CRI mount's uid and gid mappings (kubelet
// sends the pod's for each volume of a pod with a user namespace): with
// them the mount is idmapped.
func mountIDMappings(m *runtimeapi.Mount, sm specs.Mount) specs.Mount {
	if len(m.GetUidMappings()) == 0 {
		return sm
	}
	sm.Options = append(sm.Options, "idmap")
	sm.UIDMappings, sm.GIDMappings = idMappings(m.GetUidMappings()), idMappings(m.GetGidMappings())
	return sm
}

// checkMountMappings checks a CRI mount's id mappings: uid and gid
// mappings together, each range non-empty and inside the 32-bit id space.
func checkMountMappings(m *runtimeapi.Mount) error {
	dst := m.GetContainerPath()
	if (len(m.GetUidMappings()) == 0) != (len(m.GetGidMappings()) == 0) {
		return inval("mount %s: uid and gid mappings go together", dst)
	}
	for _, maps := range [][]*runtimeapi.IDMapping{m.GetUidMappings(), m.GetGidMappings()} {
		if len(maps) > 340 {
			return inval("mount %s: %d id mappings", dst, len(maps))
		}
		for _, x := range maps {
			if x.GetLength() == 0 || uint64(x.GetHostId())+uint64(x.GetLength()) > 1<<32 ||
				uint64(x.GetContainerId())+uint64(x.GetLength()) > 1<<32 {
				return inval("mount %s: id mapping %d:%d:%d is out of range", dst, x.GetContainerId(), x.GetHostId(), x.GetLength())
			}
		}
	}
	return nil
}

// checkUsernsModes refuses a pod user namespace with the host's pid or
// IPC namespace: /proc and /dev/mqueue of the host's cannot be mounted
// from a user namespace (kubelet refuses the combination too). The host's
// network is accepted (RuntimeFeatures.user_namespaces_host_network).
func checkUsernsModes(nso *runtimeapi.NamespaceOption) error {
	if nso.GetUsernsOptions().GetMode() != runtimeapi.NamespaceMode_POD {
		return nil
	}
	if nso.GetPid() == runtimeapi.NamespaceMode_NODE {
		return inval("a pod user namespace with the host's pid namespace")
	}
	if nso.GetIpc() == runtimeapi.NamespaceMode_NODE {
		return inval("a pod user namespace with the host's IPC namespace")
	}
	return nil
}
