package specgen

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestContainerSpecDefaults(t *testing.T) {
	p := testPod()
	c := testContainer(t)
	c.Config.Envs = []*runtimeapi.KeyValue{kv("FOO", "bar")}
	s := mustSpec(t, p, c, Options{})

	if s.Version != specs.Version || s.Root.Path != c.Rootfs || s.Root.Readonly {
		t.Fatalf("root: %+v version %s", s.Root, s.Version)
	}
	if want := []string{"/bin/sh", "-c", "top"}; !reflect.DeepEqual(s.Process.Args, want) {
		t.Fatalf("args %q", s.Process.Args)
	}
	if want := []string{"HOSTNAME=web-0", "PATH=/bin", "FOO=bar"}; !reflect.DeepEqual(s.Process.Env, want) {
		t.Fatalf("env %q", s.Process.Env)
	}
	if s.Process.Cwd != "/" || s.Process.Terminal || s.Process.NoNewPrivileges {
		t.Fatalf("process: %+v", s.Process)
	}
	if s.Process.User.UID != 0 || s.Process.User.GID != 0 {
		t.Fatalf("user %+v", s.Process.User)
	}
	if !reflect.DeepEqual(s.Process.Capabilities.Bounding, sorted(DefaultCapabilities)) {
		t.Fatalf("caps %v", s.Process.Capabilities.Bounding)
	}
	if s.Process.OOMScoreAdj != nil || len(s.Process.Rlimits) != 0 {
		t.Fatalf("oom %v rlimits %v", s.Process.OOMScoreAdj, s.Process.Rlimits)
	}
	// Namespaces: pod net, ipc, uts and pid by path; new mount and cgroup.
	want := map[specs.LinuxNamespaceType]string{
		specs.PIDNamespace: p.PIDNS, specs.NetworkNamespace: p.NetNS, specs.IPCNamespace: p.IPCNS,
		specs.UTSNamespace: p.UTSNS, specs.MountNamespace: "", specs.CgroupNamespace: "",
	}
	if len(s.Linux.Namespaces) != len(want) {
		t.Fatalf("namespaces %+v", s.Linux.Namespaces)
	}
	for typ, path := range want {
		if n, ok := hasNS(s, typ); !ok || n.Path != path {
			t.Errorf("namespace %s: %+v, want path %q", typ, n, path)
		}
	}
	if s.Hostname != "" {
		t.Fatalf("hostname %q set while joining the pod's UTS namespace", s.Hostname)
	}
	if s.Linux.CgroupsPath != "/kubepods/besteffort/poduid-1/ctr1" {
		t.Fatalf("cgroups path %q", s.Linux.CgroupsPath)
	}
	if !reflect.DeepEqual(s.Linux.MaskedPaths, DefaultMaskedPaths) || !reflect.DeepEqual(s.Linux.ReadonlyPaths, DefaultReadonlyPaths) {
		t.Fatalf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.Seccomp != nil {
		t.Fatal("seccomp without a profile and without SeccompDefault")
	}
	if len(s.Linux.Sysctl) != 0 {
		t.Fatalf("sysctls in a container spec: %v", s.Linux.Sysctl)
	}
	if r := s.Linux.Resources; r == nil || len(r.Devices) != 1+len(DefaultAllowedDevices) || r.Devices[0].Allow || r.CPU != nil || r.Memory != nil {
		t.Fatalf("resources %+v", r)
	}
	wantAnn := map[string]string{
		AnnotationContainerType: ContainerTypeContainer, AnnotationSandboxID: "pod1", AnnotationSandboxName: "web",
		AnnotationSandboxNamespace: "default", AnnotationSandboxUID: "uid-1", AnnotationContainerName: "app",
		AnnotationImageName: "busybox:1.36", AnnotationImageRef: "sha256:abc",
	}
	if !reflect.DeepEqual(s.Annotations, wantAnn) {
		t.Fatalf("annotations %v", s.Annotations)
	}
	if _, err := json.Marshal(s); err != nil {
		t.Fatal(err)
	}
}

func TestContainerSpecProcess(t *testing.T) {
	p := testPod()
	c := testContainer(t)
	c.Image.WorkingDir = "/img"
	c.Image.User = "www-data"
	c.Config.Command = []string{"/app"}
	c.Config.WorkingDir = "/srv"
	c.Config.Tty = true
	s2 := sc(&c)
	s2.NoNewPrivs = true
	s2.SupplementalGroups = []int64{1234}
	c.Config.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: -997}
	s := mustSpec(t, p, c, Options{})
	if !reflect.DeepEqual(s.Process.Args, []string{"/app"}) || s.Process.Cwd != "/srv" || !s.Process.Terminal || !s.Process.NoNewPrivileges {
		t.Fatalf("process %+v", s.Process)
	}
	if !contains(s.Process.Env, "TERM=xterm") {
		t.Fatalf("env %q", s.Process.Env)
	}
	if u := s.Process.User; u.UID != 33 || u.GID != 33 || !reflect.DeepEqual(u.AdditionalGids, []uint32{33, 44, 1234}) {
		t.Fatalf("user %+v", u)
	}
	if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != -997 {
		t.Fatalf("oom_score_adj %v", s.Process.OOMScoreAdj)
	}
}

func TestContainerSpecPrivileged(t *testing.T) {
	p := testPod()
	c := testContainer(t)
	sc(&c).Privileged = true
	_, err := ContainerSpec(bg, p, c, Options{})
	wantClass(t, err, errdefs.ErrInvalidArgument)

	podSC(&p).Privileged = true
	sc(&c).MaskedPaths = []string{"/proc/kcore"}
	sc(&c).Seccomp = &runtimeapi.SecurityProfile{}
	s := mustSpec(t, p, c, Options{SeccompDefault: true})
	if !reflect.DeepEqual(s.Process.Capabilities.Bounding, AllCapabilities) {
		t.Fatalf("caps %v", s.Process.Capabilities.Bounding)
	}
	if len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 || s.Linux.Seccomp != nil {
		t.Fatalf("masked %v readonly %v seccomp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Seccomp)
	}
	if !contains(findMount(s, "/sys").Options, "rw") || !contains(findMount(s, "/sys/fs/cgroup").Options, "rw") {
		t.Fatal("/sys must be writable when privileged")
	}
	if r := s.Linux.Resources.Devices; len(r) != 1 || !r[0].Allow {
		t.Fatalf("device rules %+v", r)
	}
	if findDevice(s.Linux.Devices, "/dev/null") == nil {
		t.Fatal("host devices missing")
	}

	// Unprivileged in a privileged pod: nothing of that.
	sc(&c).Privileged = false
	s = mustSpec(t, p, c, Options{SeccompDefault: true})
	if len(s.Linux.Devices) != 0 || s.Linux.Seccomp == nil || !reflect.DeepEqual(s.Linux.MaskedPaths, []string{"/proc/kcore"}) ||
		!reflect.DeepEqual(s.Linux.ReadonlyPaths, DefaultReadonlyPaths) {
		t.Fatalf("unprivileged: devices %d seccomp %v masked %v", len(s.Linux.Devices), s.Linux.Seccomp != nil, s.Linux.MaskedPaths)
	}
}

func TestContainerSpecNamespaces(t *testing.T) {
	nso := func(p *Pod, o *runtimeapi.NamespaceOption) { podSC(p).NamespaceOptions = o }
	for _, tc := range []struct {
		name     string
		setup    func(p *Pod, c *Container)
		want     map[specs.LinuxNamespaceType]string // type -> path; absent = no entry
		hostname string
	}{
		{"host network, ipc and pid", func(p *Pod, c *Container) {
			o := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE}
			nso(p, o)
			sc(c).NamespaceOptions = o
			p.NetNS, p.IPCNS, p.UTSNS, p.PIDNS = "", "", "", ""
		}, map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.CgroupNamespace: ""}, ""},
		{"container pid namespace", func(p *Pod, c *Container) {
			sc(c).NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
		}, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "", specs.NetworkNamespace: "/run/shim/netns/pod1-net",
			specs.IPCNamespace: "/run/shim/netns/pod1-ipc", specs.UTSNamespace: "/run/shim/netns/pod1-uts", specs.MountNamespace: "", specs.CgroupNamespace: ""}, ""},
		{"target pid namespace", func(p *Pod, c *Container) {
			sc(c).NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "other"}
			c.TargetPIDNS = "/proc/777/ns/pid"
		}, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "/proc/777/ns/pid", specs.NetworkNamespace: "/run/shim/netns/pod1-net",
			specs.IPCNamespace: "/run/shim/netns/pod1-ipc", specs.UTSNamespace: "/run/shim/netns/pod1-uts", specs.MountNamespace: "", specs.CgroupNamespace: ""}, ""},
		{"unpinned UTS: new one with the hostname", func(p *Pod, c *Container) {
			p.UTSNS = ""
		}, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "/proc/4242/ns/pid", specs.NetworkNamespace: "/run/shim/netns/pod1-net",
			specs.IPCNamespace: "/run/shim/netns/pod1-ipc", specs.UTSNamespace: "", specs.MountNamespace: "", specs.CgroupNamespace: ""}, "web-0"},
		{"pod pid mode from the pod config when the container has none", func(p *Pod, c *Container) {
			nso(p, &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER})
		}, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "", specs.NetworkNamespace: "/run/shim/netns/pod1-net",
			specs.IPCNamespace: "/run/shim/netns/pod1-ipc", specs.UTSNamespace: "/run/shim/netns/pod1-uts", specs.MountNamespace: "", specs.CgroupNamespace: ""}, ""},
		{"user namespace with mappings", func(p *Pod, c *Container) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
			nso(p, &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}})
		}, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "/proc/4242/ns/pid", specs.NetworkNamespace: "/run/shim/netns/pod1-net",
			specs.IPCNamespace: "/run/shim/netns/pod1-ipc", specs.UTSNamespace: "/run/shim/netns/pod1-uts", specs.MountNamespace: "",
			specs.CgroupNamespace: "", specs.UserNamespace: ""}, ""},
		{"pinned user namespace", func(p *Pod, c *Container) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
			nso(p, &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}})
			p.UserNS = "/run/shim/netns/pod1-user"
		}, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "/proc/4242/ns/pid", specs.NetworkNamespace: "/run/shim/netns/pod1-net",
			specs.IPCNamespace: "/run/shim/netns/pod1-ipc", specs.UTSNamespace: "/run/shim/netns/pod1-uts", specs.MountNamespace: "",
			specs.CgroupNamespace: "", specs.UserNamespace: "/run/shim/netns/pod1-user"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod()
			c := testContainer(t)
			tc.setup(&p, &c)
			s := mustSpec(t, p, c, Options{NodeHostname: "node-1"})
			got := map[specs.LinuxNamespaceType]string{}
			for _, n := range s.Linux.Namespaces {
				if _, dup := got[n.Type]; dup {
					t.Fatalf("namespace %s twice", n.Type)
				}
				got[n.Type] = n.Path
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("namespaces\n got %v\nwant %v", got, tc.want)
			}
			if s.Hostname != tc.hostname {
				t.Fatalf("hostname %q, want %q", s.Hostname, tc.hostname)
			}
			if n, ok := got[specs.UserNamespace]; ok && n == "" {
				want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
				if !reflect.DeepEqual(s.Linux.UIDMappings, want) || !reflect.DeepEqual(s.Linux.GIDMappings, want) {
					t.Fatalf("mappings %v %v", s.Linux.UIDMappings, s.Linux.GIDMappings)
				}
			} else if len(s.Linux.UIDMappings) != 0 {
				t.Fatalf("mappings without a new user namespace: %v", s.Linux.UIDMappings)
			}
		})
	}

	// Host network: HOSTNAME is the node's.
	p := testPod()
	podSC(&p).NamespaceOptions = &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}
	c := testContainer(t)
	s := mustSpec(t, p, c, Options{NodeHostname: "node-1"})
	if !contains(s.Process.Env, "HOSTNAME=node-1") {
		t.Fatalf("env %q", s.Process.Env)
	}

	for _, tc := range []struct {
		name  string
		setup func(p *Pod, c *Container)
		class error
	}{
		{"pod pid namespace not given", func(p *Pod, c *Container) { p.PIDNS = "" }, errdefs.ErrFailedPrecondition},
		{"network namespace not pinned", func(p *Pod, c *Container) { p.NetNS = "" }, errdefs.ErrFailedPrecondition},
		{"ipc namespace not pinned", func(p *Pod, c *Container) { p.IPCNS = "" }, errdefs.ErrFailedPrecondition},
		{"relative namespace path", func(p *Pod, c *Container) { p.NetNS = "netns/x" }, errdefs.ErrInvalidArgument},
		{"target without its namespace", func(p *Pod, c *Container) {
			sc(c).NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "other"}
		}, errdefs.ErrFailedPrecondition},
		{"bad pod id", func(p *Pod, c *Container) { p.ID = "../x" }, errdefs.ErrInvalidArgument},
		{"bad container id", func(p *Pod, c *Container) { c.ID = "a/b" }, errdefs.ErrInvalidArgument},
		{"relative rootfs", func(p *Pod, c *Container) { c.Rootfs = "rootfs" }, errdefs.ErrInvalidArgument},
		{"no pod config", func(p *Pod, c *Container) { p.Config = nil }, errdefs.ErrInvalidArgument},
		{"no command anywhere", func(p *Pod, c *Container) { c.Image = ocispec.ImageConfig{} }, errdefs.ErrInvalidArgument},
	} {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			p := testPod()
			c := testContainer(t)
			tc.setup(&p, &c)
			_, err := ContainerSpec(bg, p, c, Options{})
			wantClass(t, err, tc.class)
		})
	}
}

func TestContainerSpecResources(t *testing.T) {
	p := testPod()
	c := testContainer(t)
	c.Config.Linux.Resources = &runtimeapi.LinuxContainerResources{
		CpuShares: 512, CpuQuota: 20000, CpuPeriod: 100000, CpusetCpus: "0-1", CpusetMems: "0",
		MemoryLimitInBytes: 15 << 20, MemorySwapLimitInBytes: 15 << 20, OomScoreAdj: 1000,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 1 << 21}},
		Unified:        map[string]string{"memory.high": "max"},
	}
	o := Options{SwapAccounting: true, HugepageSizes: []string{"1GB", "2MB"}, CgroupV2: true, PidsLimit: 1024}
	s := mustSpec(t, p, c, o)
	r := s.Linux.Resources
	if *r.CPU.Shares != 512 || *r.CPU.Quota != 20000 || *r.CPU.Period != 100000 || r.CPU.Cpus != "0-1" || r.CPU.Mems != "0" {
		t.Fatalf("cpu %+v", r.CPU)
	}
	if *r.Memory.Limit != 15<<20 || *r.Memory.Swap != 15<<20 {
		t.Fatalf("memory %+v", r.Memory)
	}
	if len(r.HugepageLimits) != 1 || r.HugepageLimits[0] != (specs.LinuxHugepageLimit{Pagesize: "2MB", Limit: 1 << 21}) {
		t.Fatalf("hugepages %+v", r.HugepageLimits)
	}
	if r.Unified["memory.high"] != "max" || *r.Pids.Limit != 1024 || *s.Process.OOMScoreAdj != 1000 {
		t.Fatalf("unified %v pids %v oom %v", r.Unified, r.Pids, *s.Process.OOMScoreAdj)
	}

	// Without swap accounting or a hugetlb controller those are dropped;
	// unified needs cgroup v2.
	c.Config.Linux.Resources.Unified = nil
	s = mustSpec(t, p, c, Options{})
	if s.Linux.Resources.Memory.Swap != nil || s.Linux.Resources.HugepageLimits != nil || s.Linux.Resources.Pids != nil {
		t.Fatalf("resources %+v", s.Linux.Resources)
	}
	c.Config.Linux.Resources.Unified = map[string]string{"memory.high": "max"}
	_, err := ContainerSpec(bg, p, c, Options{})
	wantClass(t, err, errdefs.ErrInvalidArgument)
	c.Config.Linux.Resources.Unified = nil
	c.Config.Linux.Resources.HugepageLimits[0].PageSize = "16GB"
	_, err = ContainerSpec(bg, p, c, o)
	wantClass(t, err, errdefs.ErrInvalidArgument)
}

func TestCgroupsPath(t *testing.T) {
	for _, tc := range []struct{ parent, root, want string }{
		{"/kubepods/burstable/pod1", "", "/kubepods/burstable/pod1/c1"},
		{"kubepods/pod1/", "", "/kubepods/pod1/c1"},
		{"", "", "/shim/c1"},
		{"", "/custom", "/custom/c1"},
		{"kubepods-burstable-pod1.slice", "", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/c1"},
		{"system.slice", "", "/system.slice/c1"},
		{"-.slice", "", "/c1"},
	} {
		p := testPod()
		p.Config.Linux.CgroupParent = tc.parent
		got, err := CgroupsPath(p, "c1", Options{CgroupRoot: tc.root})
		if err != nil || got != tc.want {
			t.Errorf("parent %q root %q: got %q %v, want %q", tc.parent, tc.root, got, err, tc.want)
		}
	}
	for _, bad := range []string{"/kubepods/../..", "/kubepods\n", "a--b.slice", "-a.slice"} {
		p := testPod()
		p.Config.Linux.CgroupParent = bad
		_, err := CgroupsPath(p, "c1", Options{})
		wantClass(t, err, errdefs.ErrInvalidArgument)
	}
	_, err := CgroupsPath(testPod(), "..", Options{})
	wantClass(t, err, errdefs.ErrInvalidArgument)
}

func TestInfraSpec(t *testing.T) {
	p := testPod()
	p.PIDNS = ""
	sc := podSC(&p)
	sc.RunAsUser = iv(65534)
	sc.ReadonlyRootfs = true
	sc.Seccomp = &runtimeapi.SecurityProfile{}
	img := ocispec.ImageConfig{Entrypoint: []string{"/pause"}}
	root := rootfs(t)
	s, err := InfraSpec(bg, p, root, img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Process.Args, []string{"/pause"}) || s.Process.User.UID != 65534 || s.Process.User.GID != 65534 {
		t.Fatalf("process %+v", s.Process)
	}
	if !s.Process.NoNewPrivileges || len(s.Process.Capabilities.Bounding) != 0 || *s.Process.OOMScoreAdj != -998 || !s.Root.Readonly {
		t.Fatalf("process %+v root %+v", s.Process, s.Root)
	}
	if n, ok := hasNS(s, specs.PIDNamespace); !ok || n.Path != "" {
		t.Fatalf("the infra process must create the pid namespace: %+v", s.Linux.Namespaces)
	}
	if n, _ := hasNS(s, specs.NetworkNamespace); n.Path != p.NetNS {
		t.Fatalf("net namespace %+v", n)
	}
	if s.Linux.CgroupsPath != "/kubepods/besteffort/poduid-1/pod1" || s.Linux.Seccomp == nil {
		t.Fatalf("cgroups %q seccomp %v", s.Linux.CgroupsPath, s.Linux.Seccomp != nil)
	}
	if m := findMount(s, devShm); m == nil || m.Source != p.ShmPath {
		t.Fatalf("shm %+v", m)
	}
	if findMount(s, etcHosts) != nil {
		t.Fatal("the infra process needs no /etc/hosts")
	}
	if s.Annotations[AnnotationContainerType] != ContainerTypeSandbox || s.Annotations[AnnotationSandboxLogDir] != p.Config.LogDirectory {
		t.Fatalf("annotations %v", s.Annotations)
	}

	p.Config.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	_, err = InfraSpec(bg, p, root, img, Options{})
	wantClass(t, err, errdefs.ErrFailedPrecondition)
	p.Config.Linux.SecurityContext.NamespaceOptions = nil
	_, err = InfraSpec(bg, p, root, ocispec.ImageConfig{}, Options{})
	wantClass(t, err, errdefs.ErrInvalidArgument)
	p.Config.Metadata.Name = ""
	_, err = InfraSpec(bg, p, root, img, Options{})
	wantClass(t, err, errdefs.ErrInvalidArgument)
}

func TestDetectHost(t *testing.T) {
	o := DetectHost()
	if o.NodeHostname == "" {
		t.Fatal("no hostname")
	}
	if o.Capabilities == nil {
		t.Fatal("capabilities not read")
	}
	if os.Getuid() == 0 && !contains(o.Capabilities, "CAP_CHOWN") {
		t.Fatalf("root without CAP_CHOWN? %v", o.Capabilities)
	}
	if got := pageSizeName(2048); got != "2MB" {
		t.Fatal(got)
	}
	if got := pageSizeName(1048576); got != "1GB" {
		t.Fatal(got)
	}
	if got := pageSizeName(64); got != "64KB" {
		t.Fatal(got)
	}
	if got := pageSizeName(1536); got != "1536KB" {
		t.Fatal(got)
	}
}
