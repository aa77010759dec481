package monitor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// The infra process of a pod that shares one PID namespace is started by
// the monitor itself (OpInfra, cmon/infra.c): PID 1 of the pod's PID
// namespace, doing what the pause image does (reap orphans, exit on
// SIGTERM or SIGINT) without an image, a helper or a Go start. The daemon
// writes its plan to <bundle>/InfraPlanFile and makes its cgroup; the
// monitor clones it into new PID and mount namespaces, and the process
// joins the cgroup and the pod's namespaces, mounts an empty read-only
// tmpfs as its root, drops every privilege and installs a seccomp filter
// that allows only what its loop calls. From then on it is one of the
// monitor's containers: kill, delete, state and its exit record work as
// for any other.
const (
	// OpInfra starts the infra process of Request.ID from the plan in
	// Request.Bundle; the reply carries its pid.
	OpInfra = "infra"
	// InfraPlanFile is the plan's name in the bundle.
	InfraPlanFile = "infra.plan"
	// InfraPlanMagic is the plan's first line.
	InfraPlanMagic = "shim-infra-plan-1"
)

// InfraPlanNames are the names cmon/infra.c shares with RenderInfraPlan,
// generated into cmon/protocol.h (CM_IP_*).
func InfraPlanNames() [][2]string {
	return [][2]string{
		{"FILE", InfraPlanFile}, {"MAGIC", InfraPlanMagic},
		{"ROOT", "root"}, {"JOIN", "join"}, {"NEW", "new"}, {"CGROUP", "cgroup"},
		{"UID", "uid"}, {"GID", "gid"}, {"GROUPS", "groups"}, {"OOM", "oom"},
	}
}

// infraNewNS are the namespaces the infra process can make: pid and mount
// always (it is the PID namespace's init; its root is its own), cgroup
// after it joined its cgroup; the names are cmon/infra.c's.
var infraNewNS = map[specs.LinuxNamespaceType]bool{
	specs.PIDNamespace: true, specs.MountNamespace: true, specs.CgroupNamespace: true,
	specs.NetworkNamespace: true, specs.UTSNamespace: true, specs.IPCNamespace: true,
}

// infraJoinNS are the namespaces it can join by path.
var infraJoinNS = map[specs.LinuxNamespaceType]bool{
	specs.NetworkNamespace: true, specs.UTSNamespace: true, specs.IPCNamespace: true,
}

// RenderInfraPlan turns the spec of a pod's infra process into the plan
// the monitor follows, with root the empty directory its tmpfs root is
// mounted on and procs the cgroup.procs files it joins. A spec that asks
// for something the monitor's infra process cannot do (a user namespace, an
// AppArmor or SELinux label, a seccomp profile other than the runtime's
// default, capabilities, rlimits, sysctls, hooks, a terminal, device
// nodes...) is ErrNotImplemented with the reason: the caller runs the
// sandbox image instead. The spec's process arguments, mounts and masked
// paths are not used: the process runs the monitor's loop in an empty
// root. The infra process runs only the monitor's loop,
// under a seccomp filter narrower than any profile, so runtimeDefault (the
// spec carries the RuntimeDefault profile) is met by it.
func RenderInfraPlan(spec *specs.Spec, runtimeDefault bool, root string, procs []string) ([]byte, error) {
	no := func(format string, a ...any) ([]byte, error) {
		return nil, fmt.Errorf("the monitor's infra process cannot apply "+format+": %w", append(a, errdefs.ErrNotImplemented)...)
	}
	if spec.Process == nil || spec.Linux == nil {
		return no("a spec without a process or linux section")
	}
	p, l := spec.Process, spec.Linux
	switch {
	case len(l.UIDMappings) > 0 || len(l.GIDMappings) > 0:
		return no("id mappings")
	case p.ApparmorProfile != "":
		return no("AppArmor profile %q", p.ApparmorProfile)
	case p.SelinuxLabel != "" || l.MountLabel != "":
		return no("an SELinux label")
	case l.Seccomp != nil && !runtimeDefault:
		return no("a seccomp profile other than the runtime's default")
	case p.Capabilities != nil && (len(p.Capabilities.Bounding) > 0 || len(p.Capabilities.Effective) > 0 ||
		len(p.Capabilities.Permitted) > 0 || len(p.Capabilities.Inheritable) > 0 || len(p.Capabilities.Ambient) > 0):
		return no("capabilities")
	case len(p.Rlimits) > 0:
		return no("rlimits")
	case len(l.Sysctl) > 0:
		return no("sysctls")
	case spec.Hooks != nil:
		return no("hooks")
	case p.Terminal:
		return no("a terminal")
	case !p.NoNewPrivileges:
		return no("a process without no_new_privs")
	case len(l.Devices) > 0:
		return no("device nodes")
	case l.Personality != nil || l.IntelRdt != nil || p.Scheduler != nil || p.IOPriority != nil || p.ExecCPUAffinity != nil:
		return no("scheduling, personality or RDT settings")
	}
	if !filepath.IsAbs(root) || strings.ContainsAny(root, "\n\x00") {
		return nil, fmt.Errorf("infra root %q: %w", root, errdefs.ErrInvalidArgument)
	}
	var b strings.Builder
	line := func(k, v string) { b.WriteString(k + " " + v + "\n") }
	b.WriteString(InfraPlanMagic + "\n")
	line("root", root)
	newNS := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range l.Namespaces {
		switch {
		case ns.Path == "" && infraNewNS[ns.Type]:
			newNS[ns.Type] = true
			line("new", string(ns.Type))
		case ns.Path != "" && infraJoinNS[ns.Type]:
			if !filepath.IsAbs(ns.Path) || strings.ContainsAny(ns.Path, "\n\x00") {
				return nil, fmt.Errorf("%s namespace path %q: %w", ns.Type, ns.Path, errdefs.ErrInvalidArgument)
			}
			line("join", ns.Path)
		default:
			return no("a %s namespace %q", ns.Type, ns.Path)
		}
	}
	if !newNS[specs.PIDNamespace] || !newNS[specs.MountNamespace] {
		return no("a spec without new pid and mount namespaces")
	}
	for _, f := range procs {
		if !filepath.IsAbs(f) || strings.ContainsAny(f, "\n\x00") {
			return nil, fmt.Errorf("cgroup.procs file %q: %w", f, errdefs.ErrInvalidArgument)
		}
		line("cgroup", f)
	}
	line("uid", strconv.FormatUint(uint64(p.User.UID), 10))
	line("gid", strconv.FormatUint(uint64(p.User.GID), 10))
	groups := make([]string, 0, len(p.User.AdditionalGids))
	for _, g := range p.User.AdditionalGids {
		groups = append(groups, strconv.FormatUint(uint64(g), 10))
	}
	line("groups", strings.Join(groups, " "))
	if p.OOMScoreAdj != nil {
		line("oom", strconv.Itoa(*p.OOMScoreAdj))
	}
	return []byte(b.String()), nil
}

// WriteInfraPlan writes plan to the bundle.
func WriteInfraPlan(bundle string, plan []byte) error {
	return os.WriteFile(filepath.Join(bundle, InfraPlanFile), plan, 0o600)
}
