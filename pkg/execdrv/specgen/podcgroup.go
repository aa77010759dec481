package specgen

import runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

// PodCgroup is the pod's own cgroup: its cgroup parent (kubelet's
// "/kubepods/burstable/pod<uid>", or a systemd slice expanded to its
// cgroupfs path), normalized as CgroupsPath does. It is "" when the config
// gives no parent: the pod's containers then sit in Options.CgroupRoot
// with every other such pod's, and the pod has no cgroup of its own.
func PodCgroup(cfg *runtimeapi.PodSandboxConfig) (string, error) {
	return cgroupParent(cfg.GetLinux().GetCgroupParent())
}
