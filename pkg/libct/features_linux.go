package libct

import (
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// Features describes what libct supports, in the OCI features format.
// AppArmor and SELinux are reported as this host has them.
func Features() *features.Features {
	t, f := true, false
	lsm := HostLSM()
	var opts []string
	for k := range mountFlagDefs {
		opts = append(opts, k)
	}
	for k := range propagationDefs {
		opts = append(opts, k)
	}
	for k := range recAttrDefs {
		opts = append(opts, k)
	}
	opts = append(opts, "idmap", "ridmap")
	sort.Strings(opts)
	var ops []string
	for k := range seccompOps {
		ops = append(ops, string(k))
	}
	sort.Strings(ops)
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions:  opts,
		Linux: &features.Linux{
			Namespaces:   []string{"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"},
			Capabilities: CapabilityNames(),
			Cgroup:       &features.Cgroup{V1: &t, V2: &t, Systemd: &f, SystemdUser: &f, Rdma: &f},
			Seccomp: &features.Seccomp{
				Enabled: &t,
				Actions: []string{"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
					"SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"},
				Operators:      ops,
				Archs:          []string{"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"},
				KnownFlags:     []string{"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"},
				SupportedFlags: []string{"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"},
			},
			Apparmor:        &features.Apparmor{Enabled: &lsm.AppArmor},
			Selinux:         &features.Selinux{Enabled: &lsm.SELinux},
			MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: &t}},
		},
	}
}
