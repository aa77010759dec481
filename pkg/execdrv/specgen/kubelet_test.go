package specgen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// The configs below are what kubelet 1.37 (k8s.io/kubernetes v1.37.2)
// generates: pkg/kubelet/kuberuntime/kuberuntime_sandbox.go (pod),
// kuberuntime_container.go and kuberuntime_container_linux.go (container),
// pkg/kubelet/network/dns/dns.go (DNS), kubelet_pods.go (hostname,
// mounts). Each row is one value a real kubelet sends; every one must be
// accepted, and the specs built.

const kubeletPodUID = "3f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a"

// kubeletPod is a static pod with defaults on a node with cluster DNS (the
// rows change what they are about).
func kubeletPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web-node1", Namespace: "default", Uid: kubeletPodUID},
		Hostname:     "web-node1",
		LogDirectory: "/var/log/pods/default_web-node1_" + kubeletPodUID,
		DnsConfig: &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"},
			Searches: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Options: []string{"ndots:5"}},
		PortMappings: []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80}},
		Labels: map[string]string{"io.kubernetes.pod.name": "web-node1", "io.kubernetes.pod.namespace": "default",
			"io.kubernetes.pod.uid": kubeletPodUID, "app": "web"},
		Annotations: map[string]string{"kubernetes.io/config.hash": kubeletPodUID, "kubernetes.io/config.seen": "2026-12-04T10:11:12.123456789Z",
			"kubernetes.io/config.source": "file"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/pod" + kubeletPodUID,
			Sysctls:      map[string]string{},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
}

// kubeletContainer is a container of kubeletPod as kubelet creates it: the
// image by id, the /etc/hosts and termination-log mounts, the default
// masked and read-only paths, the image's user as run_as_user.
func kubeletContainer(dir string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image: &runtimeapi.ImageSpec{Image: "sha256:" + strings.Repeat("ab", 32),
			UserSpecifiedImage: "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
		Command: []string{"sh", "-c", "sleep 3600"},
		Labels: map[string]string{"io.kubernetes.container.name": "app", "io.kubernetes.pod.name": "web-node1",
			"io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": kubeletPodUID},
		Annotations: map[string]string{"io.kubernetes.container.hash": "8f3c2d1e", "io.kubernetes.container.restartCount": "0",
			"io.kubernetes.container.terminationMessagePath": "/dev/termination-log", "io.kubernetes.container.terminationMessagePolicy": "File",
			"io.kubernetes.pod.terminationGracePeriod": "30",
			"io.kubernetes.container.ports":            `[{"containerPort":80,"protocol":"TCP"}]`},
		Mounts: []*runtimeapi.Mount{
			{ContainerPath: "/etc/hosts", HostPath: filepath.Join(dir, "etc-hosts")},
			{ContainerPath: "/dev/termination-log", HostPath: filepath.Join(dir, "containers/app/5f2b9c1d")},
		},
		LogPath: "app/0.log",
		Envs:    []*runtimeapi.KeyValue{kv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")},
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpuShares: 2, CpuPeriod: 100000, OomScoreAdj: 1000},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
				RunAsUser:        &runtimeapi.Int64Value{Value: 0},
				MaskedPaths:      DefaultMaskedPaths,
				ReadonlyPaths:    DefaultReadonlyPaths,
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined},
			},
		},
	}
}

// kubeletHostDir makes the files kubeletContainer mounts.
func kubeletHostDir(t *testing.T) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "etc-hosts"), "127.0.0.1 localhost\n")
	writeFile(t, filepath.Join(dir, "containers/app/5f2b9c1d"), "")
	return dir
}

// specPodOf is cfg as the engine hands it to the spec generator: pinned
// namespaces where the pod has its own, an infra pid namespace when shared.
func specPodOf(cfg *runtimeapi.PodSandboxConfig) Pod {
	p := testPod()
	p.Config = cfg
	nso := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if nso.GetNetwork() == runtimeapi.NamespaceMode_NODE {
		p.NetNS, p.UTSNS = "", ""
	}
	if nso.GetIpc() == runtimeapi.NamespaceMode_NODE {
		p.IPCNS, p.ShmPath = "", ""
	}
	if nso.GetPid() != runtimeapi.NamespaceMode_POD {
		p.PIDNS = ""
	}
	return p
}

// withPodNS gives the container the pod's namespace options, as kubelet does.
func withPodNS(c *runtimeapi.ContainerConfig, pod *runtimeapi.PodSandboxConfig) {
	c.Linux.SecurityContext.NamespaceOptions = proto.Clone(pod.GetLinux().GetSecurityContext().GetNamespaceOptions()).(*runtimeapi.NamespaceOption)
	c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = nil
}

func TestKubeletPodConfigs(t *testing.T) {
	nso := func(c *runtimeapi.PodSandboxConfig) *runtimeapi.NamespaceOption {
		return c.Linux.SecurityContext.NamespaceOptions
	}
	dns := func(servers, searches, options []string) func(c *runtimeapi.PodSandboxConfig) {
		return func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: servers, Searches: searches, Options: options}
		}
	}
	sysctl := func(k, v string) func(c *runtimeapi.PodSandboxConfig) {
		return func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{k: v} }
	}
	many := make([]string, 32) // kubelet's limit: 32 domains, 2048 bytes with spaces
	for i := range many {
		many[i] = strings.Repeat(string(rune('a'+i%26)), 60) + ".example"
	}
	for _, tc := range []struct {
		name string
		mod  func(c *runtimeapi.PodSandboxConfig)
	}{
		{"defaults", func(*runtimeapi.PodSandboxConfig) {}},
		// DNS (network/dns/dns.go).
		// A node whose kubelet has resolvConf "" and no cluster DNS:
		// ClusterFirst falls back to Default, which gives the node's
		// loopback and the search domain ".".
		{"dns: resolvConf \"\", IPv4 node", dns([]string{"127.0.0.1"}, []string{"."}, nil)},
		{"dns: resolvConf \"\", IPv6 node", dns([]string{"::1"}, []string{"."}, nil)},
		{"dns: resolvConf \"\", dual-stack node", dns([]string{"127.0.0.1", "::1"}, []string{"."}, nil)},
		{"dns: ClusterFirst", dns([]string{"10.96.0.10"},
			[]string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example.com"}, []string{"ndots:5"})},
		{"dns: host resolv.conf options merged", dns([]string{"10.96.0.10"}, []string{"cluster.local"},
			[]string{"ndots:5", "edns0", "trust-ad", "timeout:2", "attempts:3", "rotate", "single-request-reopen", "use-vc", "no-tld-query", "inet6"})},
		{"dns: host search names as the host writes them", dns([]string{"192.168.1.1"},
			[]string{"Corp.Example.COM", "my_domain.local", "xn--bcher-kva.example", "lab-1.internal"}, nil)},
		{"dns: host nameserver with a zone", dns([]string{"fe80::1%eth0", "192.168.1.1"}, nil, nil)},
		{"dns: host nameserver that is not an address", dns([]string{"dns.corp.example"}, nil, nil)},
		{"dns: pod dnsConfig search with a trailing dot and \".\"", dns([]string{"1.1.1.1"}, []string{"example.com.", "."}, []string{"ndots:2", "edns0"})},
		{"dns: pod dnsConfig option in any form", dns([]string{"1.1.1.1"}, nil, []string{"ndots:1", "timeout:", "weird option", "a:b:c"})},
		{"dns: dnsPolicy None without searches", dns([]string{"8.8.8.8", "8.8.4.4", "2001:4860:4860::8888"}, nil, nil)},
		{"dns: empty host resolv.conf", dns(nil, nil, nil)},
		{"dns: no config", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig = nil }},
		{"dns: kubelet's search limits", dns([]string{"10.96.0.10"}, many, []string{"ndots:5"})},
		// Hostnames (kubelet_pods.go GeneratePodHostNameAndDomain).
		{"hostname: pod name truncated to 63", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 63) }},
		{"hostname: setHostnameAsFQDN", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web-0.web.default.svc.cluster.local" }},
		{"hostname: 64 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 64) }},
		{"hostname: host network (none)", func(c *runtimeapi.PodSandboxConfig) {
			c.Hostname = ""
			nso(c).Network = runtimeapi.NamespaceMode_NODE
		}},
		// Log directories.
		{"log directory: podLogsDir elsewhere", func(c *runtimeapi.PodSandboxConfig) {
			c.LogDirectory = "/tmp/kubelet-e2e.1234/logs/kube-system_etcd-node1_" + kubeletPodUID
		}},
		{"log directory: long names", func(c *runtimeapi.PodSandboxConfig) {
			c.LogDirectory = "/var/log/pods/" + strings.Repeat("n", 63) + "_" + strings.Repeat("p", 253) + "_" + kubeletPodUID
		}},
		// Sysctls (safe ones, unsafe namespaced ones, DefaultPodSysctls).
		{"sysctl: ip_local_port_range", sysctl("net.ipv4.ip_local_port_range", "32768 60999")},
		{"sysctl: ping_group_range", sysctl("net.ipv4.ping_group_range", "0 2147483647")},
		{"sysctl: ip_unprivileged_port_start", sysctl("net.ipv4.ip_unprivileged_port_start", "0")},
		{"sysctl: ip_local_reserved_ports", sysctl("net.ipv4.ip_local_reserved_ports", "30000-32767,8080")},
		{"sysctl: tcp_rmem", sysctl("net.ipv4.tcp_rmem", "4096 87380 6291456")},
		{"sysctl: tcp_keepalive_time", sysctl("net.ipv4.tcp_keepalive_time", "600")},
		{"sysctl: slash form", sysctl("net/ipv4/ip_local_port_range", "1024 65000")},
		{"sysctl: interface name with a dot", sysctl("net/ipv4/conf/eth0.100/rp_filter", "2")},
		{"sysctl: somaxconn", sysctl("net.core.somaxconn", "1024")},
		{"sysctl: kernel.sem", sysctl("kernel.sem", "250 32000 100 128")},
		{"sysctl: kernel.shm_rmid_forced", sysctl("kernel.shm_rmid_forced", "1")},
		{"sysctl: fs.mqueue.msg_max", sysctl("fs.mqueue.msg_max", "100")},
		{"sysctl: kernel.domainname (DefaultPodSysctls)", sysctl("kernel.domainname", "example.org")},
		// Annotations and labels are passed through, whatever their content.
		{"annotations: last-applied-configuration with newlines", func(c *runtimeapi.PodSandboxConfig) {
			c.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\"\n}\n"
			c.Annotations["empty"] = ""
		}},
		// Security contexts.
		{"security: runAsUser and runAsGroup", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.RunAsUser, c.Linux.SecurityContext.RunAsGroup = iv(1000), iv(3000)
		}},
		{"security: runAsGroup alone", func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.RunAsGroup = iv(3000) }},
		{"security: fsGroup and supplementalGroups", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.SupplementalGroups = []int64{2000, 4000, 5000}
			c.Linux.SecurityContext.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Strict
		}},
		{"security: privileged container in the pod", func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.Privileged = true }},
		{"security: hostNetwork", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = ""; nso(c).Network = runtimeapi.NamespaceMode_NODE }},
		{"security: hostPID", func(c *runtimeapi.PodSandboxConfig) { nso(c).Pid = runtimeapi.NamespaceMode_NODE }},
		{"security: hostIPC", func(c *runtimeapi.PodSandboxConfig) { nso(c).Ipc = runtimeapi.NamespaceMode_NODE }},
		{"security: shareProcessNamespace", func(c *runtimeapi.PodSandboxConfig) { nso(c).Pid = runtimeapi.NamespaceMode_POD }},
		{"security: host network, PID and IPC", func(c *runtimeapi.PodSandboxConfig) {
			c.Hostname = ""
			*nso(c) = runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}
		}},
		{"security: hostUsers false", func(c *runtimeapi.PodSandboxConfig) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 65536 * 3, Length: 65536}}
			nso(c).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
		}},
		{"security: hostUsers true", func(c *runtimeapi.PodSandboxConfig) {
			nso(c).UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
		}},
		// Ports (kubecontainer.MakePortMappings: every container port).
		{"ports: hostPort, UDP, SCTP, host IPs", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{
				{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 8080},
				{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53},
				{Protocol: runtimeapi.Protocol_SCTP, ContainerPort: 9999, HostPort: 9999, HostIp: "0.0.0.0"},
				{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 443, HostPort: 8443, HostIp: "::"},
			}
		}},
		// Resources: QoS cgroup parents, RuntimeClass overhead, pod-level resources.
		{"resources: guaranteed parent", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods/pod" + kubeletPodUID }},
		{"resources: systemd driver parent", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.CgroupParent = "kubepods-burstable-pod" + strings.ReplaceAll(kubeletPodUID, "-", "_") + ".slice"
		}},
		{"resources: overhead and pod-level resources", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Overhead = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 25000, CpuShares: 256, MemoryLimitInBytes: 120 << 20}
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 200000, CpuShares: 2048, MemoryLimitInBytes: 1 << 30}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := kubeletPod()
			tc.mod(cfg)
			if err := ValidatePodConfig(cfg); err != nil {
				t.Fatalf("ValidatePodConfig: %v", err)
			}
			if _, err := PodSysctls(cfg); err != nil {
				t.Fatalf("PodSysctls: %v", err)
			}
			pod := specPodOf(cfg)
			if cfg.Linux.SecurityContext.NamespaceOptions.GetPid() == runtimeapi.NamespaceMode_POD {
				if _, err := InfraSpec(bg, pod, rootfs(t), ocispec.ImageConfig{Entrypoint: []string{"/pause"}, User: "65535:65535"}, Options{}); err != nil {
					t.Fatalf("InfraSpec: %v", err)
				}
			}
			c := testContainer(t)
			c.Config = kubeletContainer(kubeletHostDir(t))
			withPodNS(c.Config, cfg)
			if _, err := ContainerSpec(bg, pod, c, Options{}); err != nil {
				t.Fatalf("ContainerSpec: %v", err)
			}
		})
	}
}

func TestKubeletContainerConfigs(t *testing.T) {
	res := func(c *runtimeapi.ContainerConfig) *runtimeapi.LinuxContainerResources { return c.Linux.Resources }
	sec := func(c *runtimeapi.ContainerConfig) *runtimeapi.LinuxContainerSecurityContext {
		return c.Linux.SecurityContext
	}
	for _, tc := range []struct {
		name string
		pod  func(c *runtimeapi.PodSandboxConfig)
		mod  func(c *runtimeapi.ContainerConfig, dir string)
	}{
		{"defaults", nil, func(*runtimeapi.ContainerConfig, string) {}},
		{"restart attempt and its log", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			c.Metadata.Attempt, c.LogPath = 12, "app/12.log"
			c.Annotations["io.kubernetes.container.restartCount"] = "12"
		}},
		{"init container name and 63-byte names", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			c.Metadata.Name = strings.Repeat("c", 63)
			c.LogPath = strings.Repeat("c", 63) + "/0.log"
		}},
		{"preStop hook and ports annotations (JSON)", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			c.Annotations["io.kubernetes.container.preStopHandler"] = `{"exec":{"command":["sh","-c","sleep 5\necho bye"]}}`
		}},
		// Environment (RelaxedEnvironmentVariableValidation: any printable
		// ASCII but '='); values may hold newlines (certificates, scripts).
		{"env: relaxed names", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			c.Envs = append(c.Envs, kv("my.var", "1"), kv("1ST", "2"), kv("with space", "3"), kv("dash-name", "4"), kv("ünï", "5"))
		}},
		{"env: values with newlines and quotes", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			c.Envs = append(c.Envs, kv("CERT", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), kv("Q", `"'$(x)`), kv("EMPTY", ""))
		}},
		{"command and args with newlines", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			c.Command, c.Args = []string{"sh", "-c"}, []string{"echo a\necho b\r\n", ""}
		}},
		{"working dir with a space", nil, func(c *runtimeapi.ContainerConfig, _ string) { c.WorkingDir = "/work dir/é" }},
		{"stdin, stdinOnce", nil, func(c *runtimeapi.ContainerConfig, _ string) { c.Stdin, c.StdinOnce = true, true }},
		{"stop signal", nil, func(c *runtimeapi.ContainerConfig, _ string) { c.StopSignal = runtimeapi.Signal_SIGNAL_SIGQUIT }},
		// Mounts (kubelet_pods.go makeMounts).
		{"mounts: emptyDir, configMap-like, subPath, hostPath", nil, func(c *runtimeapi.ContainerConfig, dir string) {
			for _, p := range []string{"volumes/kubernetes.io~empty-dir/cache", "volumes/kubernetes.io~configmap/cfg",
				"volume-subpaths/data/app/0", "host data/with space"} {
				writeFile(t, filepath.Join(dir, p, ".keep"), "")
			}
			c.Mounts = append(c.Mounts,
				&runtimeapi.Mount{ContainerPath: "/cache", HostPath: filepath.Join(dir, "volumes/kubernetes.io~empty-dir/cache")},
				&runtimeapi.Mount{ContainerPath: "/etc/config", HostPath: filepath.Join(dir, "volumes/kubernetes.io~configmap/cfg"), Readonly: true},
				&runtimeapi.Mount{ContainerPath: "/var/lib/data/sub", HostPath: filepath.Join(dir, "volume-subpaths/data/app/0")},
				&runtimeapi.Mount{ContainerPath: "/data with space", HostPath: filepath.Join(dir, "host data/with space")},
				&runtimeapi.Mount{ContainerPath: "/host", HostPath: "/", Readonly: true, RecursiveReadOnly: true},
			)
		}},
		{"mounts: bindMountOptions", nil, func(c *runtimeapi.ContainerConfig, dir string) {
			writeFile(t, filepath.Join(dir, "disk/.keep"), "")
			c.Mounts = append(c.Mounts, &runtimeapi.Mount{ContainerPath: "/mnt/a", HostPath: filepath.Join(dir, "disk"),
				MountOptions: []string{"noexec", "nosuid", "nodev"}})
		}},
		{"mounts: host path through a symlink", nil, func(c *runtimeapi.ContainerConfig, dir string) {
			writeFile(t, filepath.Join(dir, "real/.keep"), "")
			mustSymlink(t, filepath.Join(dir, "real"), filepath.Join(dir, "link"))
			c.Mounts = append(c.Mounts, &runtimeapi.Mount{ContainerPath: "/link", HostPath: filepath.Join(dir, "link")})
		}},
		// Resources (generateLinuxContainerResources, qos).
		{"resources: guaranteed", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			*res(c) = runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 100000, CpuPeriod: 100000,
				MemoryLimitInBytes: 128 << 20, OomScoreAdj: -997, HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB"}, {PageSize: "1GB"}}}
		}},
		{"resources: burstable", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			*res(c) = runtimeapi.LinuxContainerResources{CpuShares: 102, CpuPeriod: 100000, MemoryLimitInBytes: 256 << 20, OomScoreAdj: 999}
		}},
		{"resources: 1m CPU limit (minimum quota)", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			*res(c) = runtimeapi.LinuxContainerResources{CpuShares: 2, CpuQuota: 1000, CpuPeriod: 100000, OomScoreAdj: 2}
		}},
		{"resources: custom CFS period", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			*res(c) = runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 2500, CpuPeriod: 5000}
		}},
		{"resources: exclusive CPUs without quota", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			*res(c) = runtimeapi.LinuxContainerResources{CpuShares: 2048, CpuQuota: -1, CpuPeriod: 100000, CpusetCpus: "0-1", CpusetMems: "0"}
		}},
		{"resources: NoSwap on cgroup v1 (swap = memory)", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			*res(c) = runtimeapi.LinuxContainerResources{CpuShares: 2, MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 64 << 20}
		}},
		// Security contexts (security_context.go).
		{"security: runAsUser, runAsGroup, groups", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			sec(c).RunAsUser, sec(c).RunAsGroup, sec(c).SupplementalGroups = iv(1000), iv(3000), []int64{2000}
		}},
		{"security: image user by name", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			sec(c).RunAsUser, sec(c).RunAsUsername = nil, "www-data"
		}},
		{"security: capabilities", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			sec(c).Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN", "SYS_TIME", "CAP_NET_BIND_SERVICE"},
				DropCapabilities: []string{"ALL"}}
		}},
		{"security: drop a capability this kernel may not have", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			sec(c).Capabilities = &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW", "CHECKPOINT_RESTORE", "FUTURE_CAP"}}
		}},
		{"security: readOnlyRootFilesystem, no privilege escalation", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			sec(c).ReadonlyRootfs, sec(c).NoNewPrivs = true, true
		}},
		{"security: RuntimeDefault seccomp", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			sec(c).Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		}},
		{"security: privileged", func(p *runtimeapi.PodSandboxConfig) { p.Linux.SecurityContext.Privileged = true },
			func(c *runtimeapi.ContainerConfig, _ string) {
				sec(c).Privileged, sec(c).MaskedPaths, sec(c).ReadonlyPaths = true, nil, nil
			}},
		{"security: ephemeral container targeting another's pid namespace", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			sec(c).NamespaceOptions.Pid, sec(c).NamespaceOptions.TargetId = runtimeapi.NamespaceMode_TARGET, strings.Repeat("9", 64)
		}},
		{"devices from a device plugin", nil, func(c *runtimeapi.ContainerConfig, _ string) {
			c.Devices = []*runtimeapi.Device{{ContainerPath: "/dev/net/tun", HostPath: "/dev/null", Permissions: "mrw"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pcfg := kubeletPod()
			if tc.pod != nil {
				tc.pod(pcfg)
			}
			dir := kubeletHostDir(t)
			c := testContainer(t)
			c.Config = kubeletContainer(dir)
			tc.mod(c.Config, dir)
			if err := ValidateContainerConfig(c.Config); err != nil {
				t.Fatalf("ValidateContainerConfig: %v", err)
			}
			if sec(c.Config).NamespaceOptions.Pid == runtimeapi.NamespaceMode_TARGET {
				c.TargetPIDNS = "/proc/4243/ns/pid"
			}
			if _, err := ContainerSpec(bg, specPodOf(pcfg), c, Options{HugepageSizes: []string{"1GB", "2MB"}}); err != nil {
				t.Fatalf("ContainerSpec: %v", err)
			}
		})
	}
}

// TestUnsafeValuesRefused: what would inject a line into a file shim writes
// (resolv.conf, hostname), reach past a NUL, or leave its directory is
// refused, with real bytes.
func TestUnsafeValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(c *runtimeapi.PodSandboxConfig)
	}{
		{"dns server with a newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"10.0.0.1\nnameserver 6.6.6.6"} }},
		{"dns server with a NUL", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"10.0.0.1\x00"} }},
		{"dns search with a newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{".\nnameserver 6.6.6.6"} }},
		{"dns search with a carriage return", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a.example\r"} }},
		{"dns search with a NUL", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a.example\x00b"} }},
		{"dns option with a newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{"ndots:5\nnameserver 6.6.6.6"} }},
		{"dns option with a NUL", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{"\x00"} }},
		{"hostname with a newline", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web\nevil" }},
		{"hostname with a NUL", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web\x00" }},
		{"hostname longer than the kernel takes", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 65) }},
		{"sysctl value with a newline", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.core.somaxconn": "1\n2"}
		}},
		{"sysctl value with a NUL", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.core.somaxconn": "1\x00"}
		}},
		{"sysctl name leaving /proc/sys/net", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net/../kernel/core_pattern": "x"}
		}},
		{"host sysctl", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"kernel.core_pattern": "|/x"}
		}},
		{"log directory with a newline", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/x\n" }},
		{"log directory with a NUL", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/x\x00" }},
		{"log directory with ..", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/../../etc" }},
		{"pod name with a NUL", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "web\x00" }},
	} {
		t.Run("pod/"+tc.name, func(t *testing.T) {
			c := kubeletPod()
			tc.mod(c)
			wantClass(t, ValidatePodConfig(c), errdefs.ErrInvalidArgument)
		})
	}
	for _, tc := range []struct {
		name string
		mod  func(c *runtimeapi.ContainerConfig)
	}{
		{"log path leaving the pod's log directory", func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../../etc/cron.d/x" }},
		{"log path with a newline", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/0.log\n" }},
		{"log path with a NUL", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/0.log\x00" }},
		{"env value with a NUL", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{kv("A", "b\x00c")} }},
		{"env name with a NUL", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{kv("A\x00", "b")} }},
		{"argument with a NUL", func(c *runtimeapi.ContainerConfig) { c.Args = []string{"a\x00b"} }},
		{"mount host path with a NUL", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].HostPath = "/etc\x00/x" }},
		{"mount container path with a newline", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "/etc/hosts\n" }},
		{"image sub path leaving the image", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}, ImageSubPath: "../../etc"}}
		}},
	} {
		t.Run("container/"+tc.name, func(t *testing.T) {
			c := kubeletContainer("/var/lib/kubelet/pods/" + kubeletPodUID)
			tc.mod(c)
			wantClass(t, ValidateContainerConfig(c), errdefs.ErrInvalidArgument)
		})
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestOOMScoreAdjFloor: without CAP_SYS_RESOURCE the runtime cannot lower a
// process's oom_score_adj below its own; kubelet sends -997 for Guaranteed
// containers and shim asks -998 for the infra process. The spec asks for
// the floor then (runc fails to start a process otherwise), and exactly
// what kubelet sent when there is no floor.
func TestOOMScoreAdjFloor(t *testing.T) {
	floor := 0
	for _, tc := range []struct {
		sent, want int
		o          Options
	}{
		{-997, 0, Options{OOMScoreAdjFloor: &floor}},
		{999, 999, Options{OOMScoreAdjFloor: &floor}},
		{0, 0, Options{OOMScoreAdjFloor: &floor}},
		{-997, -997, Options{}},
	} {
		c := testContainer(t)
		c.Config = kubeletContainer(kubeletHostDir(t))
		c.Config.Linux.Resources.OomScoreAdj = int64(tc.sent)
		s, err := ContainerSpec(bg, specPodOf(kubeletPod()), c, tc.o)
		if err != nil {
			t.Fatal(err)
		}
		if *s.Process.OOMScoreAdj != tc.want {
			t.Errorf("sent %d with floor %v: spec has %d, want %d", tc.sent, tc.o.OOMScoreAdjFloor, *s.Process.OOMScoreAdj, tc.want)
		}
	}
	pod := kubeletPod()
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	s, err := InfraSpec(bg, specPodOf(pod), rootfs(t), ocispec.ImageConfig{Entrypoint: []string{"/pause"}}, Options{OOMScoreAdjFloor: &floor})
	if err != nil {
		t.Fatal(err)
	}
	if *s.Process.OOMScoreAdj != 0 {
		t.Fatalf("infra oom_score_adj %d, want 0", *s.Process.OOMScoreAdj)
	}
}
