package specgen

import (
	"bytes"
	"net/netip"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// hasCtl reports a NUL, newline or other ASCII control character.
func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// checkName checks a metadata name: non-empty, at most 253 bytes, no
// control characters or path separators.
func checkMetaName(what, s string) error {
	if s == "" {
		return inval("%s is empty", what)
	}
	if len(s) > 253 || hasCtl(s) || strings.ContainsAny(s, "/\\") || s == "." || s == ".." {
		return inval("%s %q", what, s)
	}
	return nil
}

// Sysctl namespaces.
const (
	SysctlNet = "net"
	SysctlIPC = "ipc"
	SysctlUTS = "uts"
)

var (
	// kubelet's sysctl name syntax (dots or slashes as separators).
	sysctlNameRe = regexp.MustCompile(`^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`)
	ipcSysctls   = map[string]bool{
		"kernel.sem": true, "kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true,
		"kernel.shm_rmid_forced": true, "kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true,
	}
)

// NormalizeSysctl converts a sysctl name to the dotted form, as kubelet
// does: when the first separator is a slash, slashes become dots and dots
// (in interface names such as eno2.100) become slashes.
func NormalizeSysctl(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, name)
}

// SysctlPath is the path of a (dotted) sysctl under /proc/sys.
func SysctlPath(name string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, NormalizeSysctl(name))
}

// SysctlNamespace names the namespace that isolates a sysctl (SysctlNet,
// SysctlIPC or SysctlUTS), "" when it is not namespaced (it would change
// the host).
func SysctlNamespace(name string) string {
	n := NormalizeSysctl(name)
	switch {
	case ipcSysctls[n] || strings.HasPrefix(n, "fs.mqueue."):
		return SysctlIPC
	case strings.HasPrefix(n, "net."):
		return SysctlNet
	case n == "kernel.domainname":
		// kubelet sends it for pods with their own network (and UTS)
		// namespace; the hostname has its own CRI field.
		return SysctlUTS
	}
	return ""
}

// maxSysctlValue caps a sysctl value (a page, what /proc/sys takes).
const maxSysctlValue = 4096

// ValidateSysctls accepts namespaced sysctls only, with kubelet's name
// syntax and a value without control characters other than tabs. shim
// writes each value to its own /proc/sys file, so no character can spill
// into another sysctl.
func ValidateSysctls(m map[string]string) error {
	for k, v := range m {
		if len(k) > 253 || !sysctlNameRe.MatchString(k) {
			return inval("sysctl name %q", k)
		}
		if SysctlNamespace(k) == "" {
			if strings.HasPrefix(NormalizeSysctl(k), "user.") {
				// kubelet sends user.* only for pods with their own user
				// namespace, which shim does not pin per pod.
				return errNotImpl("sysctl %q: user namespace sysctls", k)
			}
			return inval("sysctl %q is not namespaced: refusing to change it for the host", k)
		}
		if v == "" || len(v) > maxSysctlValue || hasCtl(strings.ReplaceAll(v, "\t", " ")) {
			return inval("sysctl %s: value %q", k, v)
		}
	}
	return nil
}

// PodSysctls validates the pod's sysctls and splits them by namespace
// (SysctlNet, SysctlIPC, SysctlUTS; keys in the dotted form): the engine
// writes them in the pod's pinned namespaces (at /proc/sys/<SysctlPath>).
// A sysctl of a namespace the pod shares with the host is refused.
func PodSysctls(cfg *runtimeapi.PodSandboxConfig) (map[string]map[string]string, error) {
	m := cfg.GetLinux().GetSysctls()
	if err := ValidateSysctls(m); err != nil {
		return nil, err
	}
	nso := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	hostNS := map[string]bool{
		SysctlNet: nso.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		SysctlUTS: nso.GetNetwork() == runtimeapi.NamespaceMode_NODE, // UTS follows the network
		SysctlIPC: nso.GetIpc() == runtimeapi.NamespaceMode_NODE,
	}
	out := map[string]map[string]string{}
	for k, v := range m {
		n := NormalizeSysctl(k)
		ns := SysctlNamespace(n)
		if hostNS[ns] {
			return nil, inval("sysctl %s needs a pod %s namespace: the pod uses the host's", k, ns)
		}
		if out[ns] == nil {
			out[ns] = map[string]string{}
		}
		out[ns][n] = v
	}
	return out, nil
}

// ValidatePodConfig checks a pod sandbox config before anything is created.
func ValidatePodConfig(cfg *runtimeapi.PodSandboxConfig) error {
	if cfg == nil {
		return inval("no pod sandbox config")
	}
	md := cfg.GetMetadata()
	if md == nil {
		return inval("pod sandbox config has no metadata")
	}
	if err := checkMetaName("pod name", md.GetName()); err != nil {
		return err
	}
	if err := checkMetaName("pod namespace", md.GetNamespace()); err != nil {
		return err
	}
	if err := checkMetaName("pod uid", md.GetUid()); err != nil {
		return err
	}
	// The kernel takes at most 64 bytes (kubelet sends at most 63); a
	// control character would add a line to /etc/hostname.
	if h := cfg.GetHostname(); len(h) > maxHostname || hasCtl(h) {
		return inval("hostname %q: at most %d bytes, no control characters", h, maxHostname)
	}
	if d := cfg.GetLogDirectory(); d != "" {
		// Names longer than NAME_MAX are accepted here: kubelet sends
		// <namespace>_<name>_<uid> (up to 354 bytes), the directory is
		// kubelet's to make, and opening a log under it fails with
		// InvalidArgument.
		if !filepath.IsAbs(d) || hasCtl(d) || hasDotDot(d) || len(d) > maxPath {
			return inval("log directory %.300q must be an absolute path without .., at most %d bytes", d, maxPath)
		}
	}
	if err := checkDNS(cfg.GetDnsConfig()); err != nil {
		return err
	}
	for _, pm := range cfg.GetPortMappings() {
		if err := checkPortMapping(pm); err != nil {
			return err
		}
	}
	lx := cfg.GetLinux()
	if _, err := cgroupParent(lx.GetCgroupParent()); err != nil {
		return err
	}
	if _, err := PodSysctls(cfg); err != nil {
		return err
	}
	if err := checkResources(lx.GetOverhead()); err != nil {
		return err
	}
	if err := checkResources(lx.GetResources()); err != nil {
		return err
	}
	// run_as_group without run_as_user is fine here: kubelet sends a pod's
	// runAsGroup alone; it applies to the image's user.
	sc := lx.GetSecurityContext()
	if err := checkIDs(sc.GetRunAsUser(), sc.GetRunAsGroup(), sc.GetSupplementalGroups()); err != nil {
		return err
	}
	if err := checkPolicy(sc.GetSupplementalGroupsPolicy()); err != nil {
		return err
	}
	nso := sc.GetNamespaceOptions()
	if err := checkNSModes(nso, true); err != nil {
		return err
	}
	if u := nso.GetUsernsOptions(); u != nil {
		if err := checkUserns(u); err != nil {
			return err
		}
		if err := checkUsernsModes(nso); err != nil {
			return err
		}
	}
	if _, _, err := seccompRequest(sc.GetSeccomp(), sc.GetSeccompProfilePath(), false); err != nil {
		return err
	}
	// An empty hostname with a pod network is accepted (critest sends
	// one): the pod gets the node's hostname.
	return nil
}

// longName reports a path element longer than the kernel takes.
func longName(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if len(e) > maxName {
			return true
		}
	}
	return false
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(filepath.ToSlash(p), "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// Limits of what the kernel takes.
const (
	maxHostname = 64   // HOST_NAME_MAX
	maxPath     = 4096 // PATH_MAX
	maxName     = 255  // NAME_MAX
)

// maxDNSConfig caps the bytes of a DNS config. kubelet sends at most 3
// servers and 32 search domains of at most 2048 bytes together; options
// come from the host's resolv.conf and the pod spec.
const maxDNSConfig = 64 << 10

// checkDNS refuses what would add a line to resolv.conf (a newline, a NUL or
// any other control character) and nothing else: kubelet sends search
// domains as the host's resolv.conf has them ("." with resolvConf "", names
// with a trailing dot, underscores), options in any form (ndots:5, edns0,
// trust-ad, timeout:2) and nameservers as the host names them (IPv6 with a
// zone).
func checkDNS(d *runtimeapi.DNSConfig) error {
	n := 0
	for _, list := range []struct {
		what   string
		values []string
	}{{"server", d.GetServers()}, {"search domain", d.GetSearches()}, {"option", d.GetOptions()}} {
		for _, v := range list.values {
			if hasCtl(v) {
				return inval("dns %s %q: control characters would add a line to resolv.conf", list.what, v)
			}
			n += len(v) + 1
		}
	}
	if n > maxDNSConfig {
		return inval("dns config of %d bytes: at most %d", n, maxDNSConfig)
	}
	return nil
}

func checkPortMapping(pm *runtimeapi.PortMapping) error {
	switch pm.GetProtocol() {
	case runtimeapi.Protocol_TCP, runtimeapi.Protocol_UDP, runtimeapi.Protocol_SCTP:
	default:
		return inval("port mapping protocol %d", pm.GetProtocol())
	}
	if p := pm.GetContainerPort(); p < 0 || p > 65535 || (p == 0 && pm.GetHostPort() != 0) {
		return inval("port mapping container port %d", p)
	}
	if p := pm.GetHostPort(); p < 0 || p > 65535 {
		return inval("port mapping host port %d", p)
	}
	if ip := pm.GetHostIp(); ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			return inval("port mapping host ip %q", ip)
		}
	}
	return nil
}

func checkIDs(user, group *runtimeapi.Int64Value, groups []int64) error {
	if user != nil {
		if _, err := checkID64("run_as_user", user.GetValue()); err != nil {
			return err
		}
	}
	if group != nil {
		if _, err := checkID64("run_as_group", group.GetValue()); err != nil {
			return err
		}
	}
	for _, g := range groups {
		if _, err := checkID64("supplemental group", g); err != nil {
			return err
		}
	}
	return nil
}

func checkPolicy(p runtimeapi.SupplementalGroupsPolicy) error {
	switch p {
	case runtimeapi.SupplementalGroupsPolicy_Merge, runtimeapi.SupplementalGroupsPolicy_Strict:
		return nil
	}
	return inval("supplemental_groups_policy %d", p)
}

// checkNSModes checks namespace modes: network and IPC are POD or NODE,
// pid is POD, CONTAINER, NODE or (containers only) TARGET with a target.
func checkNSModes(nso *runtimeapi.NamespaceOption, pod bool) error {
	for _, m := range []struct {
		name string
		mode runtimeapi.NamespaceMode
	}{{"network", nso.GetNetwork()}, {"ipc", nso.GetIpc()}} {
		if m.mode != runtimeapi.NamespaceMode_POD && m.mode != runtimeapi.NamespaceMode_NODE {
			return inval("%s namespace mode %s: want POD or NODE", m.name, m.mode)
		}
	}
	switch nso.GetPid() {
	case runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_NODE:
	case runtimeapi.NamespaceMode_TARGET:
		if pod {
			return inval("pid namespace mode TARGET is for containers")
		}
		if err := checkID("target container", nso.GetTargetId()); err != nil {
			return err
		}
	default:
		return inval("pid namespace mode %d", nso.GetPid())
	}
	return nil
}

// LogPath joins a container's log_path to its pod's log directory; the
// result never leaves the directory. An empty log_path gives "".
func LogPath(logDir, logPath string) (string, error) {
	if logPath == "" {
		return "", nil
	}
	if logDir == "" {
		return "", inval("log path %q without a pod log directory", logPath)
	}
	if err := checkLogPath(logPath); err != nil {
		return "", err
	}
	p := filepath.Join(logDir, logPath)
	if len(p) > maxPath {
		return "", inval("log path %.300q: longer than %d bytes with the pod log directory", p, maxPath)
	}
	return p, nil
}

func checkLogPath(p string) error {
	if p == "" {
		return nil
	}
	if filepath.IsAbs(p) || hasCtl(p) || hasDotDot(p) || len(p) > maxPath || longName(p) {
		return inval("log path %.300q must be relative to the pod log directory, without .., names at most %d bytes", p, maxName)
	}
	if c := path.Clean(p); c == "." || strings.HasSuffix(p, "/") {
		return inval("log path %q names no file", p)
	}
	return nil
}

// allowedMountOptions are the extra options a CRI mount may carry.
var allowedMountOptions = map[string]bool{
	"ro": true, "noexec": true, "nosuid": true, "nodev": true, "noatime": true,
	"nodiratime": true, "relatime": true, "strictatime": true, "nosymfollow": true,
}

func checkMount(m *runtimeapi.Mount) error {
	dst := m.GetContainerPath()
	if !path.IsAbs(dst) || hasCtl(dst) {
		return inval("mount container path %q must be absolute", dst)
	}
	if path.Clean(dst) == "/" {
		return inval("mount container path %q: the root cannot be a mount", dst)
	}
	if m.GetImage() != nil {
		if m.GetHostPath() != "" {
			return inval("mount %s: host_path and image are exclusive", dst)
		}
		if m.GetImage().GetImage() == "" {
			return inval("mount %s: empty image", dst)
		}
		if !m.GetReadonly() {
			return inval("image mount %s must be read-only", dst)
		}
		if sub := m.GetImageSubPath(); sub != "" && (hasCtl(sub) || hasDotDot(sub)) {
			return inval("image mount %s: sub path %q", dst, sub)
		}
	} else {
		src := m.GetHostPath()
		if !filepath.IsAbs(src) || hasCtl(src) {
			return inval("mount %s: host path %q must be absolute", dst, src)
		}
		if m.GetImageSubPath() != "" {
			return inval("mount %s: image_sub_path without image", dst)
		}
	}
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_PRIVATE, runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER,
		runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
	default:
		return inval("mount %s: propagation %d", dst, m.GetPropagation())
	}
	if m.GetRecursiveReadOnly() {
		if !m.GetReadonly() {
			return inval("mount %s: recursive_read_only needs readonly", dst)
		}
		if m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			return inval("mount %s: recursive_read_only needs private propagation", dst)
		}
	}
	for _, o := range m.GetMountOptions() {
		if !allowedMountOptions[o] {
			return inval("mount %s: option %q", dst, o)
		}
	}
	return checkMountMappings(m)
}

func checkDevice(d *runtimeapi.Device) error {
	if c := d.GetContainerPath(); !path.IsAbs(c) || hasCtl(c) || path.Clean(c) == "/" {
		return inval("device container path %q must be absolute", c)
	}
	if h := d.GetHostPath(); !filepath.IsAbs(h) || hasCtl(h) {
		return inval("device host path %q must be absolute", h)
	}
	p := d.GetPermissions()
	if len(p) > 3 {
		return inval("device %s: permissions %q", d.GetHostPath(), p)
	}
	for _, r := range p {
		if (r != 'r' && r != 'w' && r != 'm') || strings.Count(p, string(r)) > 1 {
			return inval("device %s: permissions %q: want a combination of r, w and m", d.GetHostPath(), p)
		}
	}
	return nil
}

// ValidateContainerConfig checks a container config before anything is
// created.
func ValidateContainerConfig(cfg *runtimeapi.ContainerConfig) error {
	if cfg == nil {
		return inval("no container config")
	}
	if cfg.GetMetadata() == nil {
		return inval("container config has no metadata")
	}
	if err := checkMetaName("container name", cfg.GetMetadata().GetName()); err != nil {
		return err
	}
	if img := cfg.GetImage().GetImage(); img == "" || hasCtl(img) {
		return inval("container image %q", img)
	}
	for _, a := range append(append([]string(nil), cfg.GetCommand()...), cfg.GetArgs()...) {
		if strings.IndexByte(a, 0) >= 0 {
			return inval("command argument %q contains a NUL byte", a)
		}
	}
	if wd := cfg.GetWorkingDir(); wd != "" && (!path.IsAbs(wd) || hasCtl(wd)) {
		return inval("working_dir %q must be absolute", wd)
	}
	for _, kv := range cfg.GetEnvs() {
		if err := checkEnvKey(kv.GetKey()); err != nil {
			return err
		}
		if bytes.IndexByte(kv.GetValue(), 0) >= 0 {
			return inval("environment variable %s: value contains a NUL byte", kv.GetKey())
		}
	}
	if err := checkLogPath(cfg.GetLogPath()); err != nil {
		return err
	}
	for _, m := range cfg.GetMounts() {
		if err := checkMount(m); err != nil {
			return err
		}
	}
	for _, d := range cfg.GetDevices() {
		if err := checkDevice(d); err != nil {
			return err
		}
	}
	if len(cfg.GetCDIDevices()) > 0 {
		return errNotImpl("CDI devices")
	}
	lx := cfg.GetLinux()
	if err := checkResources(lx.GetResources()); err != nil {
		return err
	}
	sc := lx.GetSecurityContext()
	if sc.GetRunAsUser() != nil && sc.GetRunAsUsername() != "" {
		return inval("run_as_user and run_as_username are both set")
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return inval("run_as_group is set without run_as_user or run_as_username")
	}
	if n := sc.GetRunAsUsername(); n != "" {
		if _, numeric, _ := parseID("user", n); numeric {
			return inval("run_as_username %q is a number: use run_as_user", n)
		}
		if err := checkName("user", n); err != nil {
			return err
		}
	}
	if err := checkIDs(sc.GetRunAsUser(), sc.GetRunAsGroup(), sc.GetSupplementalGroups()); err != nil {
		return err
	}
	if err := checkPolicy(sc.GetSupplementalGroupsPolicy()); err != nil {
		return err
	}
	if c := sc.GetCapabilities(); c != nil {
		for _, f := range []struct {
			name  string
			names []string
		}{
			{"add_capabilities", c.GetAddCapabilities()},
			{"drop_capabilities", c.GetDropCapabilities()},
			{"add_ambient_capabilities", c.GetAddAmbientCapabilities()},
		} {
			if err := checkCaps(f.name, f.names); err != nil {
				return err
			}
		}
	}
	if nso := sc.GetNamespaceOptions(); nso != nil {
		if err := checkNSModes(nso, false); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name  string
		paths []string
	}{{"masked path", sc.GetMaskedPaths()}, {"readonly path", sc.GetReadonlyPaths()}} {
		for _, p := range f.paths {
			if !path.IsAbs(p) || hasCtl(p) {
				return inval("%s %q must be absolute", f.name, p)
			}
		}
	}
	if _, _, err := seccompRequest(sc.GetSeccomp(), sc.GetSeccompProfilePath(), false); err != nil {
		return err
	}
	return nil
}
