package specgen

import (
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestValidateSysctls(t *testing.T) {
	good := map[string]string{
		"kernel.shm_rmid_forced":           "1",
		"fs.mqueue.msg_max":                "100",
		"net.ipv4.ip_local_port_range":     "1024\t65000",
		"net.ipv4.conf.eno2/100.rp_filter": "0",
		"net/ipv4/conf/eno2.100/rp_filter": "0",
		"kernel.sem":                       "250 32000 32 128",
		// shim writes each value to its own file: separators a sysctl
		// tool might split on cannot reach another sysctl.
		"net.ipv4.ip_forward": "1+kernel.core_pattern=|/x",
		"kernel.domainname":   "example.org",
	}
	if err := ValidateSysctls(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, k, v string }{
		{"not namespaced", "kernel.core_pattern", "|/tmp/x"},
		{"vm is not namespaced", "vm.swappiness", "1"},
		{"hostname belongs in the config", "kernel.hostname", "x"},
		{"newline in value", "kernel.shm_rmid_forced", "1\nkernel.core_pattern=|/x"},
		{"carriage return in value", "kernel.shm_rmid_forced", "1\r"},
		{"NUL in value", "kernel.shm_rmid_forced", "1\x00"},
		{"empty value", "kernel.shm_rmid_forced", ""},
		{"newline in name", "kernel.shm_rmid_forced\n", "1"},
		{"equals in name", "kernel.shm_rmid_forced=1", "1"},
		{"empty name", "", "1"},
		{"upper case", "NET.IPV4.ip_forward", "1"},
		{"dot dot", "net..ipv4", "1"},
		{"prefix only", "net", "1"},
		{"long value", "net.ipv4.ip_forward", strings.Repeat("1", 5000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantClass(t, ValidateSysctls(map[string]string{tc.k: tc.v}), errdefs.ErrInvalidArgument)
		})
	}
	wantClass(t, ValidateSysctls(map[string]string{"user.max_user_namespaces": "10"}), errdefs.ErrNotImplemented)
}

func TestSysctlNames(t *testing.T) {
	for _, tc := range []struct{ in, norm, path, ns string }{
		{"net.ipv4.ip_forward", "net.ipv4.ip_forward", "net/ipv4/ip_forward", SysctlNet},
		{"net/ipv4/conf/eno2.100/rp_filter", "net.ipv4.conf.eno2/100.rp_filter", "net/ipv4/conf/eno2.100/rp_filter", SysctlNet},
		{"net.ipv4.conf.eno2/100.rp_filter", "net.ipv4.conf.eno2/100.rp_filter", "net/ipv4/conf/eno2.100/rp_filter", SysctlNet},
		{"kernel.msgmax", "kernel.msgmax", "kernel/msgmax", SysctlIPC},
		{"fs/mqueue/queues_max", "fs.mqueue.queues_max", "fs/mqueue/queues_max", SysctlIPC},
		{"kernel.pid_max", "kernel.pid_max", "kernel/pid_max", ""},
		{"kernel.domainname", "kernel.domainname", "kernel/domainname", SysctlUTS},
		{"kernel.hostname", "kernel.hostname", "kernel/hostname", ""},
	} {
		if got := NormalizeSysctl(tc.in); got != tc.norm {
			t.Errorf("NormalizeSysctl(%q) = %q, want %q", tc.in, got, tc.norm)
		}
		if got := SysctlPath(tc.in); got != tc.path {
			t.Errorf("SysctlPath(%q) = %q, want %q", tc.in, got, tc.path)
		}
		if got := SysctlNamespace(tc.in); got != tc.ns {
			t.Errorf("SysctlNamespace(%q) = %q, want %q", tc.in, got, tc.ns)
		}
	}
}

func TestPodSysctls(t *testing.T) {
	cfg := validPod()
	cfg.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1", "fs/mqueue/msg_max": "100",
		"kernel.domainname": "example.org"}
	got, err := PodSysctls(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		SysctlNet: {"net.ipv4.ip_forward": "1"},
		SysctlIPC: {"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"},
		SysctlUTS: {"kernel.domainname": "example.org"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, tc := range []struct {
		name   string
		nso    *runtimeapi.NamespaceOption
		remove []string // what the pod can then have
	}{
		{"host network", &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}, []string{"net.ipv4.ip_forward", "kernel.domainname"}},
		{"host IPC", &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}, []string{"kernel.shm_rmid_forced", "fs/mqueue/msg_max"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proto.Clone(cfg).(*runtimeapi.PodSandboxConfig)
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: tc.nso}
			for _, k := range tc.remove {
				one := proto.Clone(c).(*runtimeapi.PodSandboxConfig)
				one.Linux.Sysctls = map[string]string{k: c.Linux.Sysctls[k]}
				_, err := PodSysctls(one)
				wantClass(t, err, errdefs.ErrInvalidArgument)
				delete(c.Linux.Sysctls, k)
			}
			if _, err := PodSysctls(c); err != nil {
				t.Fatalf("without them: %v", err)
			}
		})
	}
}

func validPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "0c8e6f3a-uid"},
		Hostname:     "web-0",
		LogDirectory: "/var/log/pods/default_web_0c8e6f3a-uid",
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.10.10.10", "fd00::a"}, Searches: []string{"google.com", "svc.cluster.local."}, Options: []string{"ndots:8", "edns0"}},
		PortMappings: []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1"}},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/burstable/pod0c8e6f3a",
			Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
		},
	}
}

func TestValidatePodConfig(t *testing.T) {
	if err := ValidatePodConfig(validPod()); err != nil {
		t.Fatal(err)
	}
	noHostname := validPod()
	noHostname.Hostname = ""
	if err := ValidatePodConfig(noHostname); err != nil {
		t.Fatalf("a pod without hostname (critest sends one): %v", err)
	}
	slice := validPod()
	slice.Linux.CgroupParent = "system.slice"
	if err := ValidatePodConfig(slice); err != nil {
		t.Fatalf("systemd slice parent: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*runtimeapi.PodSandboxConfig)
	}{
		{"no metadata", func(c *runtimeapi.PodSandboxConfig) { c.Metadata = nil }},
		{"empty name", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "" }},
		{"empty namespace", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "" }},
		{"empty uid", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "" }},
		{"name with newline", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "web\nx" }},
		{"name with slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "../web" }},
		{"name too long", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = strings.Repeat("a", 254) }},
		{"hostname with newline", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web\n" }},
		{"hostname too long", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 65) }},
		{"relative log directory", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "var/log/pods" }},
		{"log directory with ..", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/../../etc" }},
		{"log directory with newline", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods\n" }},
		{"dns server with newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"10.0.0.1\nnameserver 6.6.6.6"} }},
		{"dns search with newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a.com\nnameserver 6.6.6.6"} }},
		{"dns option with newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{"ndots:5\nnameserver 6.6.6.6"} }},
		{"dns config too large", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{strings.Repeat("o", 70000)} }},
		{"log directory too long", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/" + strings.Repeat("d", 70000) }},
		{"bad protocol", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].Protocol = 9 }},
		{"negative host port", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostPort = -1 }},
		{"host port too large", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostPort = 65536 }},
		{"container port zero with host port", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].ContainerPort = 0 }},
		{"bad host ip", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostIp = "1.2.3.4.5" }},
		{"unnamespaced sysctl", func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"kernel.core_pattern": "x"} }},
		{"sysctl with newline", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1\nkernel.core_pattern=x"}
		}},
		{"cgroup parent with ..", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods/../../etc" }},
		{"cgroup parent with newline", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods\n" }},
		{"bad slice", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "a--b.slice" }},
		{"negative overhead", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Overhead = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}
		}},
		{"negative resources", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuShares: -5}
		}},
		{"negative run_as_user", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{RunAsUser: iv(-1)}
		}},
		{"huge supplemental group", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{SupplementalGroups: []int64{1 << 40}}
		}},
		{"pod pid TARGET", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET}}
		}},
		{"network CONTAINER", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_CONTAINER}}
		}},
		{"ipc mode out of range", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Ipc: 7}}
		}},
		{"userns with two mappings", func(c *runtimeapi.PodSandboxConfig) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1000, Length: 100000}, {ContainerId: 0, HostId: 2000, Length: 100000}}
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}
		}},
		{"userns without container id 0", func(c *runtimeapi.PodSandboxConfig) {
			m := []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 1000, Length: 100000}}
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}
		}},
		{"userns mapping overflowing", func(c *runtimeapi.PodSandboxConfig) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 4294967000, Length: 100000}}
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}
		}},
		{"userns mode CONTAINER", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}}}
		}},
		{"userns mode TARGET", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}}}
		}},
		{"userns with the host's pid namespace", func(c *runtimeapi.PodSandboxConfig) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Pid: runtimeapi.NamespaceMode_NODE, UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}
		}},
		{"userns with the host's ipc namespace", func(c *runtimeapi.PodSandboxConfig) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Ipc: runtimeapi.NamespaceMode_NODE, UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}
		}},
		{"seccomp relative localhost", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{SeccompProfilePath: "localhost/profile.json"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validPod()
			tc.mod(c)
			wantClass(t, ValidatePodConfig(c), errdefs.ErrInvalidArgument)
		})
	}
	wantClass(t, ValidatePodConfig(nil), errdefs.ErrInvalidArgument)
}

func validContainer() *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: "app", Attempt: 1},
		Image:      &runtimeapi.ImageSpec{Image: "sha256:0123"},
		Command:    []string{"/bin/sh", "-c", "top"},
		WorkingDir: "/srv",
		Envs:       []*runtimeapi.KeyValue{kv("A", "b")},
		LogPath:    "app/1.log",
		Mounts: []*runtimeapi.Mount{
			{ContainerPath: "/data", HostPath: "/var/lib/kubelet/pods/x/volumes/data", Readonly: true, RecursiveReadOnly: true, MountOptions: []string{"noexec"}},
		},
		Devices: []*runtimeapi.Device{{ContainerPath: "/dev/fuse", HostPath: "/dev/fuse", Permissions: "rw"}},
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 28,
				OomScoreAdj: 1000, CpusetCpus: "0-1,3", HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUser: iv(1000), RunAsGroup: iv(1000), SupplementalGroups: []int64{5},
				Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"ALL"}},
				MaskedPaths:  []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"},
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "abc123"},
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			},
		},
	}
}

func TestValidateContainerConfig(t *testing.T) {
	if err := ValidateContainerConfig(validContainer()); err != nil {
		t.Fatal(err)
	}
	rsc := func(c *runtimeapi.ContainerConfig) *runtimeapi.LinuxContainerResources { return c.Linux.Resources }
	ssc := func(c *runtimeapi.ContainerConfig) *runtimeapi.LinuxContainerSecurityContext {
		return c.Linux.SecurityContext
	}
	for _, tc := range []struct {
		name  string
		mod   func(*runtimeapi.ContainerConfig)
		class error
	}{
		{"no metadata", func(c *runtimeapi.ContainerConfig) { c.Metadata = nil }, nil},
		{"empty name", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "" }, nil},
		{"name with slash", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a/b" }, nil},
		{"name with newline", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a\n" }, nil},
		{"no image", func(c *runtimeapi.ContainerConfig) { c.Image = nil }, nil},
		{"NUL in command", func(c *runtimeapi.ContainerConfig) { c.Command = []string{"/bin/sh\x00"} }, nil},
		{"NUL in args", func(c *runtimeapi.ContainerConfig) { c.Args = []string{"a\x00"} }, nil},
		{"relative working dir", func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "srv" }, nil},
		{"env without name", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{kv("", "x")} }, nil},
		{"env name with =", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{kv("A=B", "x")} }, nil},
		{"env value with NUL", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{kv("A", "\x00")} }, nil},
		{"log path with ..", func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../etc/cron.d/x" }, nil},
		{"log path with inner ..", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/../../x.log" }, nil},
		{"absolute log path", func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/passwd" }, nil},
		{"log path with newline", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app\n.log" }, nil},
		{"log path naming a directory", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/" }, nil},
		{"relative mount path", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "data" }, nil},
		{"mount on /", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "/a/.." }, nil},
		{"relative host path", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].HostPath = "data" }, nil},
		{"empty host path", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].HostPath = "" }, nil},
		{"host path with NUL", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].HostPath = "/data\x00" }, nil},
		{"rro without readonly", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].Readonly = false }, nil},
		{"rro with rslave", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0].Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
		}, nil},
		{"rro with rshared", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0].Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
		}, nil},
		{"bad propagation", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].Propagation = 5 }, nil},
		{"unknown mount option", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].MountOptions = []string{"exec"} }, nil},
		{"mount option injecting data", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].MountOptions = []string{"upperdir=/x"} }, nil},
		{"image mount with host path", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].Image = &runtimeapi.ImageSpec{Image: "x"} }, nil},
		{"writable image mount", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0] = &runtimeapi.Mount{ContainerPath: "/img", Image: &runtimeapi.ImageSpec{Image: "x"}}
		}, nil},
		{"image sub path with ..", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0] = &runtimeapi.Mount{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}, ImageSubPath: "../etc"}
		}, nil},
		{"sub path without image", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ImageSubPath = "etc" }, nil},
		{"uid mappings without gid mappings", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0].UidMappings = []*runtimeapi.IDMapping{{HostId: 1000, Length: 10}}
		}, nil},
		{"empty id mapping", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0].UidMappings = []*runtimeapi.IDMapping{{HostId: 1000, Length: 10}}
			c.Mounts[0].GidMappings = []*runtimeapi.IDMapping{{HostId: 1000}}
		}, nil},
		{"id mapping past 2^32", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0].UidMappings = []*runtimeapi.IDMapping{{HostId: 4294967000, Length: 100000}}
			c.Mounts[0].GidMappings = []*runtimeapi.IDMapping{{HostId: 1000, Length: 10}}
		}, nil},
		{"relative device path", func(c *runtimeapi.ContainerConfig) { c.Devices[0].ContainerPath = "dev/fuse" }, nil},
		{"relative device host path", func(c *runtimeapi.ContainerConfig) { c.Devices[0].HostPath = "fuse" }, nil},
		{"bad device permissions", func(c *runtimeapi.ContainerConfig) { c.Devices[0].Permissions = "rwx" }, nil},
		{"repeated device permissions", func(c *runtimeapi.ContainerConfig) { c.Devices[0].Permissions = "rr" }, nil},
		{"CDI devices", func(c *runtimeapi.ContainerConfig) {
			c.CDIDevices = []*runtimeapi.CDIDevice{{Name: "vendor.com/gpu=0"}}
		}, errdefs.ErrNotImplemented},
		{"negative cpu shares", func(c *runtimeapi.ContainerConfig) { rsc(c).CpuShares = -1 }, nil},
		{"cpu shares 1", func(c *runtimeapi.ContainerConfig) { rsc(c).CpuShares = 1 }, nil},
		{"cpu shares too large", func(c *runtimeapi.ContainerConfig) { rsc(c).CpuShares = 1 << 20 }, nil},
		{"negative cpu quota", func(c *runtimeapi.ContainerConfig) { rsc(c).CpuQuota = -100 }, nil},
		{"tiny cpu quota", func(c *runtimeapi.ContainerConfig) { rsc(c).CpuQuota = 10 }, nil},
		{"negative cpu period", func(c *runtimeapi.ContainerConfig) { rsc(c).CpuPeriod = -1 }, nil},
		{"cpu period too long", func(c *runtimeapi.ContainerConfig) { rsc(c).CpuPeriod = 2000000 }, nil},
		{"negative memory", func(c *runtimeapi.ContainerConfig) { rsc(c).MemoryLimitInBytes = -1 }, nil},
		{"swap below memory", func(c *runtimeapi.ContainerConfig) { rsc(c).MemorySwapLimitInBytes = 1 << 20 }, nil},
		{"negative swap", func(c *runtimeapi.ContainerConfig) { rsc(c).MemorySwapLimitInBytes = -2 }, nil},
		{"oom score too low", func(c *runtimeapi.ContainerConfig) { rsc(c).OomScoreAdj = -1001 }, nil},
		{"oom score too high", func(c *runtimeapi.ContainerConfig) { rsc(c).OomScoreAdj = 1001 }, nil},
		{"bad cpuset", func(c *runtimeapi.ContainerConfig) { rsc(c).CpusetCpus = "0-" }, nil},
		{"reversed cpuset", func(c *runtimeapi.ContainerConfig) { rsc(c).CpusetCpus = "3-1" }, nil},
		{"cpuset with newline", func(c *runtimeapi.ContainerConfig) { rsc(c).CpusetMems = "0\n" }, nil},
		{"bad hugepage size", func(c *runtimeapi.ContainerConfig) { rsc(c).HugepageLimits[0].PageSize = "2M" }, nil},
		{"repeated hugepage size", func(c *runtimeapi.ContainerConfig) {
			rsc(c).HugepageLimits = append(rsc(c).HugepageLimits, &runtimeapi.HugepageLimit{PageSize: "2MB"})
		}, nil},
		{"unified key with slash", func(c *runtimeapi.ContainerConfig) { rsc(c).Unified = map[string]string{"../memory.max": "1"} }, nil},
		{"unified value with newline", func(c *runtimeapi.ContainerConfig) { rsc(c).Unified = map[string]string{"memory.max": "1\n2"} }, nil},
		{"user and username", func(c *runtimeapi.ContainerConfig) { ssc(c).RunAsUsername = "nobody" }, nil},
		{"group without user", func(c *runtimeapi.ContainerConfig) { ssc(c).RunAsUser = nil }, nil},
		{"numeric username", func(c *runtimeapi.ContainerConfig) { ssc(c).RunAsUser = nil; ssc(c).RunAsUsername = "1000" }, nil},
		{"username with colon", func(c *runtimeapi.ContainerConfig) { ssc(c).RunAsUser = nil; ssc(c).RunAsUsername = "a:b" }, nil},
		{"negative user", func(c *runtimeapi.ContainerConfig) { ssc(c).RunAsUser = iv(-1) }, nil},
		{"huge user", func(c *runtimeapi.ContainerConfig) { ssc(c).RunAsUser = iv(1 << 40) }, nil},
		{"huge group", func(c *runtimeapi.ContainerConfig) { ssc(c).RunAsGroup = iv(4294967295) }, nil},
		{"negative supplemental group", func(c *runtimeapi.ContainerConfig) { ssc(c).SupplementalGroups = []int64{-3} }, nil},
		{"bad groups policy", func(c *runtimeapi.ContainerConfig) { ssc(c).SupplementalGroupsPolicy = 3 }, nil},
		{"unknown capability", func(c *runtimeapi.ContainerConfig) { ssc(c).Capabilities.AddCapabilities = []string{"NET_ADMIN2"} }, nil},
		{"ambient ALL", func(c *runtimeapi.ContainerConfig) { ssc(c).Capabilities.AddAmbientCapabilities = []string{"ALL"} }, nil},
		{"target without id", func(c *runtimeapi.ContainerConfig) { ssc(c).NamespaceOptions.TargetId = "" }, nil},
		{"network CONTAINER", func(c *runtimeapi.ContainerConfig) {
			ssc(c).NamespaceOptions.Network = runtimeapi.NamespaceMode_CONTAINER
		}, nil},
		{"relative masked path", func(c *runtimeapi.ContainerConfig) { ssc(c).MaskedPaths = []string{"proc/kcore"} }, nil},
		{"readonly path with newline", func(c *runtimeapi.ContainerConfig) { ssc(c).ReadonlyPaths = []string{"/proc\n"} }, nil},
		{"seccomp localhost relative", func(c *runtimeapi.ContainerConfig) {
			ssc(c).Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "p.json"}
		}, nil},
		{"seccomp legacy garbage", func(c *runtimeapi.ContainerConfig) { ssc(c).Seccomp = nil; ssc(c).SeccompProfilePath = "strict" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proto.Clone(validContainer()).(*runtimeapi.ContainerConfig)
			tc.mod(c)
			class := tc.class
			if class == nil {
				class = errdefs.ErrInvalidArgument
			}
			wantClass(t, ValidateContainerConfig(c), class)
		})
	}
	wantClass(t, ValidateContainerConfig(nil), errdefs.ErrInvalidArgument)
}

func TestLogPath(t *testing.T) {
	p, err := LogPath("/var/log/pods/x", "app/0.log")
	if err != nil || p != "/var/log/pods/x/app/0.log" {
		t.Fatalf("got %q %v", p, err)
	}
	if p, err := LogPath("/var/log/pods/x", ""); err != nil || p != "" {
		t.Fatalf("empty: %q %v", p, err)
	}
	for _, bad := range []string{"../x.log", "a/../../x.log", "/etc/x", "a\x00.log", "a\n.log"} {
		_, err := LogPath("/var/log/pods/x", bad)
		wantClass(t, err, errdefs.ErrInvalidArgument)
	}
	_, err = LogPath("", "a.log")
	wantClass(t, err, errdefs.ErrInvalidArgument)
}
