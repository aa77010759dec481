package libct

import (
	"encoding/binary"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

func TestParseMountOptions(t *testing.T) {
	pm, err := parseMountOptions([]string{"rbind", "ro", "nosuid", "rw", "nodev", "rslave", "rro", "size=1m", "mode=755"})
	if err != nil {
		t.Fatal(err)
	}
	want := uintptr(unix.MS_BIND | unix.MS_REC | unix.MS_NOSUID | unix.MS_NODEV)
	if pm.flags != want || !pm.isBind || !pm.recursive {
		t.Errorf("flags %#x, want %#x", pm.flags, want)
	}
	if len(pm.propFlags) != 1 || pm.propFlags[0] != unix.MS_SLAVE|unix.MS_REC {
		t.Errorf("propagation %v", pm.propFlags)
	}
	if pm.recSet != unix.MOUNT_ATTR_RDONLY || pm.data != "size=1m,mode=755" {
		t.Errorf("recSet %#x data %q", pm.recSet, pm.data)
	}
	if pm, err := parseMountOptions([]string{"rbind", "idmap"}); err != nil || !pm.idmap || pm.ridmap || pm.data != "" {
		t.Errorf("idmap: %+v %v", pm, err)
	}
	if pm, err := parseMountOptions([]string{"rbind", "ridmap"}); err != nil || !pm.idmap || !pm.ridmap {
		t.Errorf("ridmap: %+v %v", pm, err)
	}
	m := specs.Mount{Type: "bind", Source: "/x", Destination: "/y",
		UIDMappings: []specs.LinuxIDMapping{{HostID: 1000, Size: 10}}, GIDMappings: []specs.LinuxIDMapping{{HostID: 1000, Size: 10}}}
	if pm, err := parseSpecMount(m); err != nil || !pm.idmap || !pm.isBind {
		t.Errorf("mappings make a bind mount idmapped: %+v %v", pm, err)
	}
}

// TestValidateIDMappedMounts: one row per bad idmapped mount, each refused
// as an invalid argument before anything is made.
func TestValidateIDMappedMounts(t *testing.T) {
	maps := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	cases := []struct {
		name   string
		m      specs.Mount
		userNS bool
		ok     bool
	}{
		{"idmap bind in a user namespace", specs.Mount{Type: "bind", Options: []string{"rbind", "idmap"}}, true, true},
		{"ridmap with mappings, no user namespace", specs.Mount{Type: "bind", Options: []string{"rbind", "ridmap"}, UIDMappings: maps, GIDMappings: maps}, false, true},
		{"idmap tmpfs", specs.Mount{Type: "tmpfs", Options: []string{"idmap"}}, true, false},
		{"mappings on a tmpfs", specs.Mount{Type: "tmpfs", UIDMappings: maps, GIDMappings: maps}, true, false},
		{"idmap without mappings or user namespace", specs.Mount{Type: "bind", Options: []string{"rbind", "idmap"}}, false, false},
		{"uid mappings only", specs.Mount{Type: "bind", Options: []string{"idmap"}, UIDMappings: maps}, true, false},
		{"empty mapping", specs.Mount{Type: "bind", Options: []string{"idmap"}, UIDMappings: []specs.LinuxIDMapping{{HostID: 1}}, GIDMappings: maps}, true, false},
		{"mapping past 2^32", specs.Mount{Type: "bind", Options: []string{"idmap"}, UIDMappings: maps,
			GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1<<32 - 10, Size: 11}}}, true, false},
	}
	for _, c := range cases {
		c.m.Destination, c.m.Source = "/mnt", "/tmp"
		pm, err := parseSpecMount(c.m)
		if err == nil {
			err = validateIDMappedMount(c.m, pm, c.userNS)
		}
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok && !errdefs.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want an invalid argument", c.name, err)
		}
	}
}

func TestValidateIDRejects(t *testing.T) {
	for _, id := range []string{"", "..", "a/b", "-x", "a\nb", "a b", string(make([]byte, 2000))} {
		if err := ValidateID(id); !errdefs.IsInvalidArgument(err) {
			t.Errorf("id %q: %v", id, err)
		}
	}
	for _, id := range []string{"a", "abc-123_x.y", "0f3a"} {
		if err := ValidateID(id); err != nil {
			t.Errorf("id %q: %v", id, err)
		}
	}
}

// validID is idPattern checked by hand: it agrees with the regexp on
// every string of up to three characters from a mixed alphabet.
func TestValidIDIsPattern(t *testing.T) {
	re := regexp.MustCompile(idPattern)
	alphabet := []string{"a", "Z", "0", "9", "_", ".", "+", "-", "/", " ", "\n", "\x00", ":", "é", "\xff", "~"}
	var walk func(prefix string, n int)
	walk = func(prefix string, n int) {
		if got, want := validID(prefix), re.MatchString(prefix); got != want {
			t.Errorf("validID(%q) = %v, the pattern says %v", prefix, got, want)
		}
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			walk(prefix+c, n-1)
		}
	}
	walk("", 3)
}

func TestCgroupPath(t *testing.T) {
	cases := []struct {
		in, want string
		class    error
	}{
		{"", "/shim/c1", nil},
		{"/kubepods/pod1/c1", "/kubepods/pod1/c1", nil},
		{"rel/path", "/rel/path", nil},
		{"/a/../../b", "/b", nil},
		{"/", "", errdefs.ErrInvalidArgument},
		{"system.slice:cri:c1", "", errdefs.ErrNotImplemented},
	}
	for _, c := range cases {
		s := &specs.Spec{Linux: &specs.Linux{CgroupsPath: c.in}}
		got, err := CgroupPath(s, "c1")
		if c.class != nil {
			if !errors.Is(err, c.class) {
				t.Errorf("%q: err %v, want %v", c.in, err, c.class)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: got %q %v, want %q", c.in, got, err, c.want)
		}
	}
}

func TestBootstrapEncoding(t *testing.T) {
	b := bootstrap{cloneFlags: unix.CLONE_NEWNS | unix.CLONE_NEWPID, nsPaths: []string{"net:/proc/1/ns/net"}, userMap: true, timeOffsets: "monotonic 1 0\n", hold: true}
	enc := b.encode()
	if binary.LittleEndian.Uint32(enc[0:]) != bsMagic || int(binary.LittleEndian.Uint32(enc[4:])) != len(enc)-8 {
		t.Fatalf("bad header %x", enc[:8])
	}
	// Walk the records as the C side does.
	var types []uint16
	body := enc[8:]
	for off := 0; off+8 <= len(body); {
		typ := binary.LittleEndian.Uint16(body[off:])
		l := int(binary.LittleEndian.Uint32(body[off+4:]))
		off += 8 + l
		types = append(types, typ)
	}
	want := []uint16{bsCloneFlags, bsNSPath, bsUserMap, bsTimeOffsets, bsHold}
	if len(types) != len(want) {
		t.Fatalf("records %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("records %v, want %v", types, want)
		}
	}
}

func TestNamespacedSysctl(t *testing.T) {
	newNS := map[specs.LinuxNamespaceType]bool{specs.IPCNamespace: true, specs.NetworkNamespace: true}
	for _, ok := range []string{"kernel.shmmax", "fs.mqueue.msg_max", "net.ipv4.ip_forward"} {
		if err := namespacedSysctl(ok, newNS); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"kernel.pid_max", "vm.overcommit_memory", "kernel.hostname", "fs.file-max"} {
		if err := namespacedSysctl(bad, newNS); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if err := namespacedSysctl("net.ipv4.ip_forward", nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("net sysctl without netns: %v", err)
	}
}

func TestSeccompBuild(t *testing.T) {
	errno := uint(1)
	ok := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno, DefaultErrnoRet: &errno,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Flags:         []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read", "write", "no_such_syscall"}, Action: specs.ActAllow},
			{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 0x7e020000, Op: specs.OpMaskedEqual},
			}},
			// two conditions on one argument become separate rules
			{Names: []string{"personality"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 0, Op: specs.OpEqualTo}, {Index: 0, Value: 8, Op: specs.OpEqualTo},
			}},
		},
	}
	if err := ValidateSeccomp(ok); err != nil {
		t.Fatal(err)
	}
	bad := []*specs.LinuxSeccomp{
		{DefaultAction: "SCMP_ACT_NOPE"},
		{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{"SCMP_ARCH_VAX"}},
		{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 9, Op: specs.OpEqualTo}}}}},
		{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_WAT"}}}}},
		{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_NOPE"}},
	}
	for i, s := range bad {
		if err := ValidateSeccomp(s); !errdefs.IsInvalidArgument(err) {
			t.Errorf("bad profile %d: %v", i, err)
		}
	}
}

func TestValidateResources(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	good := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(1 << 30), Swap: i64(2 << 30), Reservation: i64(-1)},
		CPU:    &specs.LinuxCPU{Shares: u64(1024), Quota: i64(-1), Period: u64(100000)},
		Pids:   &specs.LinuxPids{Limit: i64(-1)},
	}
	if err := validateResources(good); err != nil {
		t.Fatal(err)
	}
	bad := []*specs.LinuxResources{
		{Memory: &specs.LinuxMemory{Limit: i64(-2)}},
		{Memory: &specs.LinuxMemory{Limit: i64(100)}},
		{Memory: &specs.LinuxMemory{Limit: i64(1 << 30), Swap: i64(1 << 20)}},
		{CPU: &specs.LinuxCPU{Period: u64(10)}},
		{CPU: &specs.LinuxCPU{Shares: u64(1)}},
		{Pids: &specs.LinuxPids{Limit: i64(-9)}},
	}
	for i, r := range bad {
		if err := validateResources(r); !errdefs.IsInvalidArgument(err) {
			t.Errorf("bad resources %d: %v", i, err)
		}
	}
}

func TestParseCaps(t *testing.T) {
	s, err := parseCaps([]string{"CAP_CHOWN", "kill", "CAP_SYS_ADMIN"})
	if err != nil || s != 1<<0|1<<5|1<<21 {
		t.Fatalf("caps %#x %v", s, err)
	}
	if _, err := parseCaps([]string{"CAP_NOPE"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown cap: %v", err)
	}
}

func FuzzParseMountOptions(f *testing.F) {
	for _, seed := range []string{"rbind,ro,nosuid", "size=1m,mode=755", "rro,rslave", "idmap", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, opts string) {
		pm, err := parseMountOptions(strings.Split(opts, ","))
		if err != nil {
			if !errdefs.Is(err, errdefs.ErrNotImplemented) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if pm.isBind != (pm.flags&unix.MS_BIND != 0) {
			t.Fatalf("isBind %v with flags %#x", pm.isBind, pm.flags)
		}
	})
}

// TestChildFilesLayout: the preserved fds keep 3, 4, ...; the init pipe,
// the exec fifo and the sealed binary follow, each where the env and the
// exec path say.
func TestChildFilesLayout(t *testing.T) {
	f := func(name string) *os.File {
		x, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.Close() })
		return x
	}
	pipe, fifo, exe := f("pipe"), f("fifo"), f("exe")
	extra := []*os.File{f("x0"), nil, f("x2")}
	for _, tc := range []struct {
		name  string
		in    childFiles
		files []*os.File
		fds   childFds
		env   []string
	}{
		{"container init", childFiles{extra: extra, initPipe: pipe, fifo: fifo, exe: exe},
			[]*os.File{extra[0], nil, extra[2], pipe, fifo, exe}, childFds{initPipe: 6, fifo: 7, exe: 8},
			[]string{envInitPipe + "=6", envFifoFd + "=7"}},
		{"exec", childFiles{extra: extra[:1], initPipe: pipe, exe: exe},
			[]*os.File{extra[0], pipe, exe}, childFds{initPipe: 4, fifo: -1, exe: 5},
			[]string{envInitPipe + "=4"}},
		{"namespace holder of another binary", childFiles{initPipe: pipe},
			[]*os.File{pipe}, childFds{initPipe: 3, fifo: -1, exe: -1},
			[]string{envInitPipe + "=3"}},
	} {
		files, fds := tc.in.layout()
		if !slices.Equal(files, tc.files) || fds != tc.fds || !slices.Equal(fds.env(), tc.env) {
			t.Errorf("%s: files %v fds %+v env %q; want %v %+v %q", tc.name, files, fds, fds.env(), tc.files, tc.fds, tc.env)
		}
	}
	if len(extra) != 3 {
		t.Errorf("layout changed the caller's extra files: %v", extra)
	}
}
