// Package specgen builds the OCI runtime spec of a container (and of a pod's
// infra process) from the CRI request, the image config and the pod's
// sandbox, the way kubelet documents the CRI fields. It also validates CRI
// pod and container configs.
//
// Everything here is a function of its inputs: no global state beyond a
// memo of the converted default seccomp profile, and no kernel work beyond
// reading /etc/passwd and /etc/group inside the container rootfs (resolved
// inside it, never following a symlink out), stat-ing host paths (mount
// sources, devices, a Localhost seccomp profile) and, for mounts that ask
// for propagation, reading /proc/self/mountinfo. Host facts come in through
// Options; DetectHost fills them once at daemon start.
//
// Pod sysctls are not put in container specs: containers join the pod's
// pinned namespaces, where the engine applies PodSysctls once per pod.
//
// This is shim's internal code, not a stable public API.
package specgen

import (
	"context"
	"fmt"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// Pod is what a container's spec needs from its pod sandbox.
type Pod struct {
	ID     string
	Config *runtimeapi.PodSandboxConfig
	// Pinned namespace files. "" means the pod uses the host's namespace, as
	// Config's NamespaceOptions say (network NODE, ipc NODE); a POD-mode
	// namespace without a path is an error (ErrFailedPrecondition). UTSNS
	// may be "" for a pod network: each container then gets a new UTS
	// namespace with the pod's hostname. With a pinned UTS namespace the
	// engine sets the hostname in it (a spec can only set the hostname of
	// a UTS namespace it creates).
	NetNS, IPCNS, UTSNS string
	// PIDNS is the pod's shared pid namespace (NamespaceMode_POD: the infra
	// process's /proc/<pid>/ns/pid), or "" when the pod shares none.
	PIDNS string
	// UserNS is the pod's pinned user namespace when the pod has one
	// (userns_options mode POD); "" with mode POD makes each container
	// create its own user namespace with the pod's mappings.
	UserNS string
	// Files in the pod's state dir, bind-mounted into each container unless
	// the container mounts that path itself ("" = none). ShmPath is the
	// pod's /dev/shm (a tmpfs the engine mounted); "" with host IPC binds
	// the host's /dev/shm, "" otherwise gives each container its own tmpfs.
	HostnameFile, HostsFile, ResolvConfFile, ShmPath string
}

// Container is the container being created.
type Container struct {
	ID       string
	Config   *runtimeapi.ContainerConfig
	Image    ocispec.ImageConfig
	ImageRef string
	// Rootfs is the mounted root filesystem: /etc/passwd and /etc/group are
	// read inside it.
	Rootfs string
	// VolumeDir is an empty per-container directory the engine owns; the
	// image config's Volumes are bind-mounted from subdirectories of it
	// (see ImageVolumes). "" leaves image volumes in the writable layer.
	VolumeDir string
	// TargetPIDNS is the pid namespace path of the container named by
	// NamespaceOption.target_id, for pid mode TARGET.
	TargetPIDNS string
	// ImageMounts maps a CRI mount's container_path (cleaned, path.Clean)
	// to the host directory where the engine mounted the image of an
	// image-volume mount (Mount.image); image_sub_path is resolved inside
	// it. A CRI image mount without an entry is ErrNotImplemented. In a
	// pod with a user namespace the engine mounts the image idmapped with
	// the pod's mappings (the mount's own mappings are not applied again).
	ImageMounts map[string]string
}

// Options are the runtime's settings and the host's facts.
type Options struct {
	// SeccompDefault is kubelet's SeccompDefault: a container without a
	// seccomp profile gets RuntimeDefault instead of Unconfined.
	SeccompDefault bool
	// AppArmorDefaultProfile is the profile for RuntimeDefault: set only
	// when the host has it loaded ("" = none, the container is not
	// confined). Localhost profiles are passed on whatever the host has:
	// the executor applies or refuses them.
	AppArmorDefaultProfile string
	// SELinux: the host has SELinux enabled. Without it a pod's
	// selinux_options are validated but not put in the spec: kubelet sends
	// them whatever the host (the node e2e EmptyDir specs do), and
	// containerd and CRI-O leave them out there too. The daemon logs it
	// once and reports the host's support in Status ("lsm").
	SELinux bool
	// CgroupV2 is true on a unified (v2 only) host; Unified resources are
	// refused elsewhere.
	CgroupV2 bool
	// SwapAccounting: the memory controller has swap limits (memsw on v1,
	// swap.max on v2). Without it memory_swap_limit_in_bytes is ignored.
	SwapAccounting bool
	// HugepageSizes are the host's huge page sizes ("2MB", "1GB") when the
	// hugetlb controller is available; nil drops hugepage limits.
	HugepageSizes []string
	// PidsLimit, when > 0, limits the number of tasks of each container.
	PidsLimit int64
	// Capabilities are the capabilities the runtime holds and may grant
	// (privileged containers, "ALL"); nil means every capability known.
	Capabilities []string
	// CgroupRoot is the cgroup parent of pods whose config gives none
	// (default "/shim").
	CgroupRoot string
	// NodeHostname is the host's name (HOSTNAME of host-network pods, and
	// of pods without a hostname); "" asks the kernel.
	NodeHostname string
	// AllowedDevices are the device cgroup rules every container gets after
	// deny-all; nil means DefaultAllowedDevices.
	AllowedDevices []specs.LinuxDeviceCgroup
	// OOMScoreAdjFloor, when set, is the lowest oom_score_adj the runtime
	// can give a process: its own, when it lacks CAP_SYS_RESOURCE (lowering
	// the value needs it). Specs ask for no less, as containerd's
	// restrict_oom_score_adj does: an OCI runtime such as runc refuses to
	// start a process whose oom_score_adj it cannot write.
	OOMScoreAdjFloor *int
}

// Annotations set on every spec, for OCI hooks and debugging.
const (
	AnnotationContainerType    = "io.kubernetes.cri.container-type"
	AnnotationSandboxID        = "io.kubernetes.cri.sandbox-id"
	AnnotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	AnnotationSandboxLogDir    = "io.kubernetes.cri.sandbox-log-directory"
	AnnotationContainerName    = "io.kubernetes.cri.container-name"
	AnnotationImageName        = "io.kubernetes.cri.image-name"
	AnnotationImageRef         = "io.kubernetes.cri.image-ref"

	ContainerTypeContainer = "container"
	ContainerTypeSandbox   = "sandbox"
)

// infraOOMScoreAdj is kubelet's oom_score_adj for pod infrastructure.
const infraOOMScoreAdj = -998

func errNotImpl(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrNotImplemented)...)
}

func inval(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
}

// ContainerSpec builds the OCI runtime spec of container c in pod.
func ContainerSpec(ctx context.Context, pod Pod, c Container, o Options) (*specs.Spec, error) {
	if err := ValidateContainerConfig(c.Config); err != nil {
		return nil, err
	}
	if pod.Config == nil {
		return nil, inval("pod %s: no sandbox config", pod.ID)
	}
	if err := checkID("pod", pod.ID); err != nil {
		return nil, err
	}
	if err := checkID("container", c.ID); err != nil {
		return nil, err
	}
	if err := checkRootfs(c.Rootfs); err != nil {
		return nil, err
	}
	ctx = log.WithFields(ctx, map[string]any{log.FieldPodID: pod.ID, log.FieldContainerID: c.ID})
	cfg := c.Config
	sc := cfg.GetLinux().GetSecurityContext()
	podSC := pod.Config.GetLinux().GetSecurityContext()
	privileged := sc.GetPrivileged()
	if privileged && !podSC.GetPrivileged() {
		return nil, inval("container %q is privileged but its pod sandbox is not", cfg.GetMetadata().GetName())
	}

	s := baseSpec(c.Rootfs, sc.GetReadonlyRootfs())
	hostname := podHostname(pod.Config, o)

	args, err := mergeArgs(cfg.GetCommand(), cfg.GetArgs(), c.Image.Entrypoint, c.Image.Cmd)
	if err != nil {
		return nil, err
	}
	s.Process.Args = args
	if s.Process.Env, err = mergeEnv(hostname, c.Image.Env, cfg.GetEnvs(), cfg.GetTty()); err != nil {
		return nil, err
	}
	s.Process.Cwd = workingDir(cfg.GetWorkingDir(), c.Image.WorkingDir)
	s.Process.Terminal = cfg.GetTty()
	s.Process.NoNewPrivileges = sc.GetNoNewPrivs()

	userReq := userRequest{
		runAsUser:  sc.GetRunAsUser(),
		runAsGroup: sc.GetRunAsGroup(),
		username:   sc.GetRunAsUsername(),
		imageUser:  c.Image.User,
		groups:     sc.GetSupplementalGroups(),
		strict:     sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict,
	}
	if s.Process.User, err = resolveUser(c.Rootfs, userReq); err != nil {
		return nil, err
	}

	if s.Process.Capabilities, err = capabilities(ctx, sc.GetCapabilities(), privileged, o); err != nil {
		return nil, err
	}

	pidMode := pod.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid()
	if nso := sc.GetNamespaceOptions(); nso != nil {
		pidMode = nso.GetPid()
	}
	ns, err := namespaces(pod, pidMode, c.TargetPIDNS, false)
	if err != nil {
		return nil, err
	}
	s.Linux.Namespaces = ns.list
	s.Linux.UIDMappings, s.Linux.GIDMappings = ns.uidMap, ns.gidMap
	if ns.newUTS {
		s.Hostname = hostname
	}

	mounts, rootProp, err := containerMounts(ctx, pod, c, privileged, sc.GetReadonlyRootfs())
	if err != nil {
		return nil, err
	}
	s.Mounts = mounts
	s.Linux.RootfsPropagation = rootProp

	devs, rules, err := containerDevices(cfg.GetDevices(), privileged, o)
	if err != nil {
		return nil, err
	}
	s.Linux.Devices = devs

	res := cfg.GetLinux().GetResources()
	if s.Linux.Resources, err = resources(ctx, res, o); err != nil {
		return nil, err
	}
	s.Linux.Resources.Devices = rules
	if res != nil {
		s.Process.OOMScoreAdj = oomScoreAdj(ctx, int(res.GetOomScoreAdj()), o)
	}
	if s.Linux.CgroupsPath, err = CgroupsPath(pod, c.ID, o); err != nil {
		return nil, err
	}

	if !privileged {
		s.Linux.MaskedPaths = pathsOr(sc.GetMaskedPaths(), DefaultMaskedPaths)
		s.Linux.ReadonlyPaths = pathsOr(sc.GetReadonlyPaths(), DefaultReadonlyPaths)
	}
	if s.Linux.Seccomp, err = seccompProfile(ctx, sc.GetSeccomp(), sc.GetSeccompProfilePath(), privileged, s, o); err != nil {
		return nil, err
	}
	if s.Process.ApparmorProfile, err = apparmorProfile(sc.GetApparmor(), sc.GetApparmorProfile(), privileged, o); err != nil {
		return nil, err
	}
	if s.Process.SelinuxLabel, s.Linux.MountLabel, err = selinuxLabels(ctx, sc.GetSelinuxOptions(), privileged, o.SELinux); err != nil {
		return nil, err
	}

	s.Annotations = podAnnotations(pod, ContainerTypeContainer)
	s.Annotations[AnnotationContainerName] = cfg.GetMetadata().GetName()
	img := cfg.GetImage().GetUserSpecifiedImage()
	if img == "" {
		img = cfg.GetImage().GetImage()
	}
	s.Annotations[AnnotationImageName] = img
	if c.ImageRef != "" {
		s.Annotations[AnnotationImageRef] = c.ImageRef
	}
	return s, nil
}

// OwnInfraImage stands for an image for the monitor's own infra process,
// which runs none: the pause image's user (65535:65535) and entrypoint.
var OwnInfraImage = ocispec.ImageConfig{User: "65535:65535", Entrypoint: []string{"/pause"}}

// InfraSpec builds the spec of the pod's infra process (the pause image's
// entrypoint), started only when the pod shares one PID namespace: it
// creates that namespace and joins the pod's pinned ones. It runs with the
// sandbox security context, no capabilities and no_new_privs.
func InfraSpec(ctx context.Context, pod Pod, rootfs string, image ocispec.ImageConfig, o Options) (*specs.Spec, error) {
	if err := ValidatePodConfig(pod.Config); err != nil {
		return nil, err
	}
	if err := checkID("pod", pod.ID); err != nil {
		return nil, err
	}
	if err := checkRootfs(rootfs); err != nil {
		return nil, err
	}
	ctx = log.WithFields(ctx, map[string]any{log.FieldPodID: pod.ID})
	sc := pod.Config.GetLinux().GetSecurityContext()
	if m := sc.GetNamespaceOptions().GetPid(); m != runtimeapi.NamespaceMode_POD {
		return nil, fmt.Errorf("pod %s: pid namespace mode %s: an infra process is only for a shared (POD) pid namespace: %w",
			pod.ID, m, errdefs.ErrFailedPrecondition)
	}
	s := baseSpec(rootfs, sc.GetReadonlyRootfs())
	hostname := podHostname(pod.Config, o)
	var err error
	if s.Process.Args, err = mergeArgs(nil, nil, image.Entrypoint, image.Cmd); err != nil {
		return nil, err
	}
	if s.Process.Env, err = mergeEnv(hostname, image.Env, nil, false); err != nil {
		return nil, err
	}
	s.Process.Cwd = workingDir("", image.WorkingDir)
	s.Process.NoNewPrivileges = true
	s.Process.OOMScoreAdj = oomScoreAdj(ctx, infraOOMScoreAdj, o)
	userReq := userRequest{
		runAsUser:  sc.GetRunAsUser(),
		runAsGroup: sc.GetRunAsGroup(),
		imageUser:  image.User,
		groups:     sc.GetSupplementalGroups(),
		strict:     sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict,
		podLevel:   true,
	}
	if s.Process.User, err = resolveUser(rootfs, userReq); err != nil {
		return nil, err
	}
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: []string{}, Effective: []string{}, Permitted: []string{},
	}

	pod.PIDNS = ""
	ns, err := namespaces(pod, runtimeapi.NamespaceMode_POD, "", true)
	if err != nil {
		return nil, err
	}
	s.Linux.Namespaces = ns.list
	s.Linux.UIDMappings, s.Linux.GIDMappings = ns.uidMap, ns.gidMap
	if ns.newUTS {
		s.Hostname = hostname
	}
	s.Mounts = sortMounts(append(defaultMounts(false), podIDMapped(pod, podShm(pod, false))))

	s.Linux.Resources = &specs.LinuxResources{Devices: deviceRules(nil, false, o)}
	if s.Linux.CgroupsPath, err = CgroupsPath(pod, pod.ID, o); err != nil {
		return nil, err
	}
	s.Linux.MaskedPaths = append([]string(nil), DefaultMaskedPaths...)
	s.Linux.ReadonlyPaths = append([]string(nil), DefaultReadonlyPaths...)
	privileged := sc.GetPrivileged()
	if s.Linux.Seccomp, err = seccompProfile(ctx, sc.GetSeccomp(), sc.GetSeccompProfilePath(), privileged, s, o); err != nil {
		return nil, err
	}
	if s.Process.ApparmorProfile, err = apparmorProfile(sc.GetApparmor(), "", privileged, o); err != nil {
		return nil, err
	}
	if s.Process.SelinuxLabel, s.Linux.MountLabel, err = selinuxLabels(ctx, sc.GetSelinuxOptions(), privileged, o.SELinux); err != nil {
		return nil, err
	}
	s.Annotations = podAnnotations(pod, ContainerTypeSandbox)
	if d := pod.Config.GetLogDirectory(); d != "" {
		s.Annotations[AnnotationSandboxLogDir] = d
	}
	return s, nil
}

// oomScoreAdj is v, raised to the runtime's floor (with a log line).
func oomScoreAdj(ctx context.Context, v int, o Options) *int {
	if f := o.OOMScoreAdjFloor; f != nil && v < *f {
		log.G(ctx).WithField("requested", v).WithField("applied", *f).
			Info("oom_score_adj below the runtime's own needs CAP_SYS_RESOURCE: raised to the runtime's")
		v = *f
	}
	return &v
}

func baseSpec(rootfs string, readonly bool) *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs, Readonly: readonly},
		Process: &specs.Process{},
		Linux:   &specs.Linux{},
	}
}

func podAnnotations(pod Pod, typ string) map[string]string {
	md := pod.Config.GetMetadata()
	return map[string]string{
		AnnotationContainerType:    typ,
		AnnotationSandboxID:        pod.ID,
		AnnotationSandboxName:      md.GetName(),
		AnnotationSandboxNamespace: md.GetNamespace(),
		AnnotationSandboxUID:       md.GetUid(),
	}
}

// checkID refuses ids that could not be one path component (they name
// cgroups and state directories).
func checkID(what, id string) error {
	if id == "" || len(id) > 128 || id == "." || id == ".." || hasCtl(id) {
		return inval("%s id %q", what, id)
	}
	for _, r := range id {
		if r == '/' || r == '\\' || r == ' ' || r == ':' {
			return inval("%s id %q", what, id)
		}
	}
	return nil
}

func checkRootfs(p string) error {
	if p == "" || !filepath.IsAbs(p) || hasCtl(p) {
		return inval("rootfs %q must be an absolute path", p)
	}
	return nil
}

// pathsOr returns given when kubelet sent a list, else the defaults.
// kubelet sends the default lists itself for the Default procMount; an
// empty list cannot be told from an absent one on the wire.
func pathsOr(given, def []string) []string {
	if len(given) > 0 {
		return append([]string(nil), given...)
	}
	return append([]string(nil), def...)
}

// DefaultMaskedPaths and DefaultReadonlyPaths are the runtime defaults
// (the lists containerd and kubelet use).
var (
	DefaultMaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	DefaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)
