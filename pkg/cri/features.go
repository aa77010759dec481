package cri

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtimeHandlers reports the RuntimeClass handlers and what each can do
// on this host (probed at start: see engine.RuntimeHandlers).
func (s *Server) runtimeHandlers() []*runtimeapi.RuntimeHandler {
	if s.rt == nil {
		return nil
	}
	var out []*runtimeapi.RuntimeHandler
	for _, h := range s.rt.RuntimeHandlers() {
		out = append(out, &runtimeapi.RuntimeHandler{Name: h.Name, Features: &runtimeapi.RuntimeHandlerFeatures{
			RecursiveReadOnlyMounts: h.RecursiveReadOnly,
			UserNamespaces:          h.UserNamespaces,
		}})
	}
	return out
}

// runtimeFeatures reports what shim implements whatever the handler:
// SupplementalGroupsPolicy (Merge and Strict) with the container status
// user, pods with a user namespace and the host's network (for handlers
// that run user namespaces at all), and CRI Mount.mount_options (noexec,
// nodev, nosuid on bind mounts).
func (s *Server) runtimeFeatures() *runtimeapi.RuntimeFeatures {
	return &runtimeapi.RuntimeFeatures{
		SupplementalGroupsPolicy:  true,
		UserNamespacesHostNetwork: true,
		MountOptions:              true,
	}
}
