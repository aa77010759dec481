package libct

import (
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// Validate checks a spec before anything is created and returns the
// absolute rootfs path. Every refusal is ErrInvalidArgument (or
// ErrPermissionDenied / ErrNotImplemented, or ErrFailedPrecondition for an
// AppArmor profile or SELinux label the host cannot apply) with a message
// naming the field.
func Validate(spec *specs.Spec, bundle string) (string, error) {
	inval := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if spec == nil {
		return "", inval("no spec")
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return "", inval("spec: root.path is required")
	}
	if spec.Process == nil {
		return "", inval("spec: process is required")
	}
	if spec.Linux == nil {
		return "", inval("spec: linux is required")
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	if r, err := filepath.EvalSymlinks(rootfs); err == nil {
		rootfs = r
	}
	if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("rootfs %s is not a directory: %w", rootfs, errdefs.ErrNotFound)
	}
	if err := validateProcess(spec.Process); err != nil {
		return "", err
	}
	if err := hostLSM.validateMountLabel(spec.Linux.MountLabel); err != nil {
		return "", err
	}
	seen := map[specs.LinuxNamespaceType]bool{}
	newNS := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range spec.Linux.Namespaces {
		if _, ok := nsFlags[ns.Type]; !ok {
			return "", inval("namespace type %q", ns.Type)
		}
		if seen[ns.Type] {
			return "", inval("namespace %q given twice", ns.Type)
		}
		seen[ns.Type] = true
		if ns.Path == "" {
			newNS[ns.Type] = true
		} else if !filepath.IsAbs(ns.Path) {
			return "", inval("namespace %s path %q is not absolute", ns.Type, ns.Path)
		} else if _, err := os.Stat(ns.Path); err != nil {
			return "", fmt.Errorf("namespace %s path %q: %w: %w", ns.Type, ns.Path, err, errdefs.ErrNotFound)
		}
	}
	if newNS[specs.UserNamespace] && (len(spec.Linux.UIDMappings) == 0 || len(spec.Linux.GIDMappings) == 0) {
		return "", inval("a new user namespace needs uidMappings and gidMappings")
	}
	if !newNS[specs.UserNamespace] && (len(spec.Linux.UIDMappings) > 0 || len(spec.Linux.GIDMappings) > 0) {
		return "", inval("uidMappings/gidMappings given without a new user namespace")
	}
	if spec.Hostname != "" && !seen[specs.UTSNamespace] {
		return "", inval("hostname %q needs a UTS namespace", spec.Hostname)
	}
	if spec.Domainname != "" && !seen[specs.UTSNamespace] {
		return "", inval("domainname %q needs a UTS namespace", spec.Domainname)
	}
	if len(spec.Linux.TimeOffsets) > 0 && !newNS[specs.TimeNamespace] {
		return "", inval("timeOffsets need a new time namespace")
	}
	for k := range spec.Linux.Sysctl {
		if err := namespacedSysctl(k, newNS); err != nil {
			return "", err
		}
	}
	if err := validateResources(spec.Linux.Resources); err != nil {
		return "", err
	}
	if spec.Linux.RootfsPropagation != "" {
		if _, ok := propagationDefs[spec.Linux.RootfsPropagation]; !ok {
			return "", inval("rootfsPropagation %q", spec.Linux.RootfsPropagation)
		}
	}
	for _, m := range spec.Mounts {
		if m.Destination == "" {
			return "", inval("mount with an empty destination")
		}
		pm, err := parseSpecMount(m)
		if err != nil {
			return "", err
		}
		if err := validateIDMappedMount(m, pm, seen[specs.UserNamespace]); err != nil {
			return "", err
		}
	}
	for _, d := range spec.Linux.Devices {
		switch d.Type {
		case "c", "b", "u", "p":
		default:
			return "", inval("device %s: type %q", d.Path, d.Type)
		}
		if !filepath.IsAbs(d.Path) {
			return "", inval("device path %q is not absolute", d.Path)
		}
	}
	if spec.Linux.Seccomp != nil {
		if err := ValidateSeccomp(spec.Linux.Seccomp); err != nil {
			return "", err
		}
	}
	if spec.Linux.IntelRdt != nil {
		return "", fmt.Errorf("intelRdt: %w", errdefs.ErrNotImplemented)
	}
	return rootfs, nil
}

func validateProcess(p *specs.Process) error {
	inval := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if len(p.Args) == 0 || p.Args[0] == "" {
		return inval("process.args must not be empty")
	}
	if p.Cwd == "" || !filepath.IsAbs(p.Cwd) {
		return inval("process.cwd %q must be an absolute path inside the container", p.Cwd)
	}
	if p.OOMScoreAdj != nil && (*p.OOMScoreAdj < -1000 || *p.OOMScoreAdj > 1000) {
		return inval("process.oomScoreAdj %d out of range [-1000, 1000]", *p.OOMScoreAdj)
	}
	if err := checkRlimits(p.Rlimits); err != nil {
		return err
	}
	if err := hostLSM.validateProcessLSM(p); err != nil {
		return err
	}
	if _, err := parseProcCaps(p.Capabilities); err != nil {
		return err
	}
	if p.IOPriority != nil {
		return fmt.Errorf("process.ioPriority: %w", errdefs.ErrNotImplemented)
	}
	if p.Scheduler != nil {
		return fmt.Errorf("process.scheduler: %w", errdefs.ErrNotImplemented)
	}
	if p.ExecCPUAffinity != nil && (p.ExecCPUAffinity.Initial != "" || p.ExecCPUAffinity.Final != "") {
		return fmt.Errorf("process.execCPUAffinity: %w", errdefs.ErrNotImplemented)
	}
	return nil
}

// validateIDMappedMount checks an idmapped mount (idmap or ridmap option,
// or id mappings): a bind mount, with both uid and gid mappings or none
// (then the container's user namespace, which it must have, gives them).
func validateIDMappedMount(m specs.Mount, pm parsedMount, userNS bool) error {
	if !pm.idmap {
		return nil
	}
	inval := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if !pm.isBind {
		return inval("mount %s: idmapped mounts are bind mounts (type %q)", m.Destination, m.Type)
	}
	if (len(m.UIDMappings) == 0) != (len(m.GIDMappings) == 0) {
		return inval("mount %s: uidMappings and gidMappings go together", m.Destination)
	}
	if len(m.UIDMappings) == 0 {
		if !userNS {
			return inval("mount %s: an idmapped mount without mappings needs a container user namespace", m.Destination)
		}
		return nil
	}
	if err := checkIDMappings("uid", m.UIDMappings); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	if err := checkIDMappings("gid", m.GIDMappings); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	return nil
}
