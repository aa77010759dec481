package specgen

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// rulesFor lists the rules of p that name syscall.
func rulesFor(p *specs.LinuxSeccomp, syscall string) []specs.LinuxSyscall {
	var out []specs.LinuxSyscall
	for _, s := range p.Syscalls {
		if contains(s.Names, syscall) {
			out = append(out, s)
		}
	}
	return out
}

// allowedUnconditionally: some rule allows the syscall with no argument
// condition.
func allowedUnconditionally(p *specs.LinuxSeccomp, syscall string) bool {
	for _, r := range rulesFor(p, syscall) {
		if r.Action == specs.ActAllow && len(r.Args) == 0 {
			return true
		}
	}
	return false
}

func TestDefaultSeccompContent(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("needs an amd64 or arm64 host (the expectations are written for them)")
	}
	p, err := DefaultSeccomp(DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultAction != specs.ActErrno || p.DefaultErrnoRet == nil || *p.DefaultErrnoRet != uint(unix.EPERM) {
		t.Fatalf("default action %s errno %v: want SCMP_ACT_ERRNO with EPERM", p.DefaultAction, p.DefaultErrnoRet)
	}
	native := map[string]specs.Arch{"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64}[runtime.GOARCH]
	if !contains(archNames(p.Architectures), string(native)) {
		t.Fatalf("architectures %v miss %s", p.Architectures, native)
	}
	for _, sc := range []string{"read", "write", "openat", "execve", "exit_group", "chmod", "setuid"} {
		if !allowedUnconditionally(p, sc) {
			t.Errorf("%s is not allowed", sc)
		}
	}
	// Without CAP_SYS_ADMIN: no mount, unshare, setns, sethostname; clone
	// only without namespace flags; clone3 fails with ENOSYS so that libc
	// falls back to clone.
	for _, sc := range []string{"mount", "umount2", "unshare", "setns", "sethostname", "pivot_root", "bpf", "reboot", "init_module"} {
		if len(rulesFor(p, sc)) != 0 {
			t.Errorf("%s has a rule without CAP_SYS_ADMIN/the capability: %+v", sc, rulesFor(p, sc))
		}
	}
	clone := rulesFor(p, "clone")
	if len(clone) != 1 || clone[0].Action != specs.ActAllow || len(clone[0].Args) != 1 {
		t.Fatalf("clone rules: %+v", clone)
	}
	nsFlags := uint64(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP)
	a := clone[0].Args[0]
	if a.Index != 0 || a.Op != specs.OpMaskedEqual || a.Value != nsFlags || a.ValueTwo != 0 {
		t.Fatalf("clone is not restricted to calls without namespace flags (CLONE_NEWUSER among them): %+v", a)
	}
	clone3 := rulesFor(p, "clone3")
	if len(clone3) != 1 || clone3[0].Action != specs.ActErrno || clone3[0].ErrnoRet == nil || *clone3[0].ErrnoRet != uint(unix.ENOSYS) {
		t.Fatalf("clone3 rules: %+v", clone3)
	}

	// With CAP_SYS_ADMIN those become allowed, and clone is unrestricted.
	admin, err := DefaultSeccomp(append(append([]string(nil), DefaultCapabilities...), "CAP_SYS_ADMIN"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []string{"mount", "umount2", "unshare", "setns", "sethostname", "clone", "clone3"} {
		if !allowedUnconditionally(admin, sc) {
			t.Errorf("with CAP_SYS_ADMIN %s is not allowed: %+v", sc, rulesFor(admin, sc))
		}
	}
}

func archNames(a []specs.Arch) []string {
	var out []string
	for _, x := range a {
		out = append(out, string(x))
	}
	return out
}

// The memo hands out copies: changing one result does not change the next.
func TestDefaultSeccompCopies(t *testing.T) {
	a, err := DefaultSeccomp(DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	n := len(a.Syscalls)
	first := a.Syscalls[0].Names[0]
	a.Syscalls[0].Names[0] = "mutated"
	a.Syscalls = a.Syscalls[:1]
	*a.DefaultErrnoRet = 99
	b, err := DefaultSeccomp(DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Syscalls) != n || b.Syscalls[0].Names[0] != first || *b.DefaultErrnoRet != uint(unix.EPERM) {
		t.Fatal("a changed result leaked into the memo")
	}
	// Capabilities the profile does not look at share one entry.
	before := len(defaultSeccomp.memo)
	if _, err := DefaultSeccomp(append(append([]string(nil), DefaultCapabilities...), "CAP_NET_ADMIN", "CAP_IPC_LOCK")); err != nil {
		t.Fatal(err)
	}
	if after := len(defaultSeccomp.memo); after != before {
		t.Fatalf("memo grew from %d to %d for irrelevant capabilities", before, after)
	}
}

func TestSeccompRequest(t *testing.T) {
	prof := func(ty runtimeapi.SecurityProfile_ProfileType, ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: ty, LocalhostRef: ref}
	}
	for _, tc := range []struct {
		name     string
		sp       *runtimeapi.SecurityProfile
		legacy   string
		def      bool
		want     seccompChoice
		wantPath string
	}{
		{"nil is unconfined", nil, "", false, seccompNone, ""},
		{"nil with SeccompDefault", nil, "", true, seccompDefault, ""},
		{"empty profile is RuntimeDefault", &runtimeapi.SecurityProfile{}, "", false, seccompDefault, ""},
		{"unconfined", prof(runtimeapi.SecurityProfile_Unconfined, ""), "", true, seccompNone, ""},
		{"localhost", prof(runtimeapi.SecurityProfile_Localhost, "/p/x.json"), "", false, seccompLocalhost, "/p/x.json"},
		{"field wins over legacy", prof(runtimeapi.SecurityProfile_Unconfined, ""), "runtime/default", false, seccompNone, ""},
		{"legacy runtime/default", nil, "runtime/default", false, seccompDefault, ""},
		{"legacy docker/default", nil, "docker/default", false, seccompDefault, ""},
		{"legacy unconfined", nil, "unconfined", true, seccompNone, ""},
		{"legacy localhost", nil, "localhost//p/../q.json", false, seccompLocalhost, "/q.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, p, err := seccompRequest(tc.sp, tc.legacy, tc.def)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || p != tc.wantPath {
				t.Fatalf("got %d %q, want %d %q", got, p, tc.want, tc.wantPath)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		sp     *runtimeapi.SecurityProfile
		legacy string
	}{
		{"relative localhost", prof(runtimeapi.SecurityProfile_Localhost, "x.json"), ""},
		{"empty localhost", prof(runtimeapi.SecurityProfile_Localhost, ""), ""},
		{"localhost with newline", prof(runtimeapi.SecurityProfile_Localhost, "/p\n.json"), ""},
		{"unknown type", prof(7, ""), ""},
		{"legacy relative localhost", nil, "localhost/x.json"},
		{"legacy garbage", nil, "default"},
	} {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			_, _, err := seccompRequest(tc.sp, tc.legacy, false)
			wantClass(t, err, errdefs.ErrInvalidArgument)
		})
	}
}

func TestLoadSeccomp(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "block-chmod.json")
	writeFile(t, good, `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}`)
	s := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	p, err := loadSeccomp(good, s)
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultAction != specs.ActAllow || len(p.Syscalls) != 1 || p.Syscalls[0].Action != specs.ActErrno || !contains(p.Syscalls[0].Names, "fchmodat") {
		t.Fatalf("profile: %+v", p)
	}

	_, err = loadSeccomp(filepath.Join(dir, "missing.json"), s)
	wantClass(t, err, errdefs.ErrNotFound)

	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `{"defaultAction": `)
	_, err = loadSeccomp(bad, s)
	wantClass(t, err, errdefs.ErrInvalidArgument)

	huge := filepath.Join(dir, "huge.json")
	writeFile(t, huge, `{"defaultAction": "SCMP_ACT_ALLOW", "x": "`+strings.Repeat("a", MaxSeccompProfileSize)+`"}`)
	_, err = loadSeccomp(huge, s)
	wantClass(t, err, errdefs.ErrResourceExhausted)

	_, err = loadSeccomp(dir, s)
	wantClass(t, err, errdefs.ErrInvalidArgument)

	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = loadSeccomp(fifo, s)
	wantClass(t, err, errdefs.ErrInvalidArgument)
	_ = os.Remove(fifo)
}

func TestSeccompInSpec(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "block-hostname.json")
	writeFile(t, prof, `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}`)

	p := testPod()
	podSC(&p).Privileged = true
	c := testContainer(t)
	sc(&c).Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: prof}
	sc(&c).Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}}
	s := mustSpec(t, p, c, Options{})
	if s.Linux.Seccomp == nil || len(rulesFor(s.Linux.Seccomp, "sethostname")) != 1 {
		t.Fatalf("localhost profile not applied: %+v", s.Linux.Seccomp)
	}

	sc(&c).Privileged = true
	s = mustSpec(t, p, c, Options{})
	if s.Linux.Seccomp != nil {
		t.Fatal("a privileged container must not be filtered")
	}

	sc(&c).Privileged = false
	sc(&c).Seccomp = nil
	if s = mustSpec(t, p, c, Options{}); s.Linux.Seccomp != nil {
		t.Fatal("no profile without SeccompDefault must be unconfined")
	}
	s = mustSpec(t, p, c, Options{SeccompDefault: true})
	if s.Linux.Seccomp == nil || !allowedUnconditionally(s.Linux.Seccomp, "mount") {
		t.Fatal("SeccompDefault: want the default profile, with mount allowed for CAP_SYS_ADMIN")
	}
	sc(&c).Capabilities = nil
	s = mustSpec(t, p, c, Options{SeccompDefault: true})
	if len(rulesFor(s.Linux.Seccomp, "mount")) != 0 {
		t.Fatal("mount allowed without CAP_SYS_ADMIN")
	}
}

// TestAppArmorProfile: RuntimeDefault (and no profile) is the runtime's
// default profile when one is loaded, no confinement otherwise; a
// Localhost profile is always passed on (the executor applies or refuses
// it); bad values are InvalidArgument.
func TestAppArmorProfile(t *testing.T) {
	sp := func(pt runtimeapi.SecurityProfile_ProfileType, ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: pt, LocalhostRef: ref}
	}
	loaded, none := Options{AppArmorDefaultProfile: "shim-default"}, Options{}
	cases := []struct {
		name       string
		sp         *runtimeapi.SecurityProfile
		legacy     string
		privileged bool
		o          Options
		want       string
		class      error
	}{
		{"nothing, default loaded", nil, "", false, loaded, "shim-default", nil},
		{"nothing, no default", nil, "", false, none, "", nil},
		{"RuntimeDefault, default loaded", sp(runtimeapi.SecurityProfile_RuntimeDefault, ""), "", false, loaded, "shim-default", nil},
		{"RuntimeDefault, no default", sp(runtimeapi.SecurityProfile_RuntimeDefault, ""), "", false, none, "", nil},
		{"RuntimeDefault, privileged", sp(runtimeapi.SecurityProfile_RuntimeDefault, ""), "", true, loaded, "", nil},
		{"Unconfined", sp(runtimeapi.SecurityProfile_Unconfined, ""), "", false, loaded, "", nil},
		{"Localhost, no default", sp(runtimeapi.SecurityProfile_Localhost, "mine"), "", false, none, "mine", nil},
		{"Localhost with prefix", sp(runtimeapi.SecurityProfile_Localhost, "localhost/mine"), "", false, loaded, "mine", nil},
		{"Localhost, privileged", sp(runtimeapi.SecurityProfile_Localhost, "mine"), "", true, none, "mine", nil},
		{"structured field wins", sp(runtimeapi.SecurityProfile_Unconfined, ""), "localhost/mine", false, loaded, "", nil},
		{"legacy runtime/default", nil, "runtime/default", false, loaded, "shim-default", nil},
		{"legacy docker/default", nil, "docker/default", false, none, "", nil},
		{"legacy unconfined", nil, "unconfined", false, loaded, "", nil},
		{"legacy localhost", nil, "localhost/mine", false, none, "mine", nil},
		{"Localhost without a name", sp(runtimeapi.SecurityProfile_Localhost, ""), "", false, loaded, "", errdefs.ErrInvalidArgument},
		{"Localhost name with a newline", sp(runtimeapi.SecurityProfile_Localhost, "a\nb"), "", false, loaded, "", errdefs.ErrInvalidArgument},
		{"ref on RuntimeDefault", sp(runtimeapi.SecurityProfile_RuntimeDefault, "mine"), "", false, loaded, "", errdefs.ErrInvalidArgument},
		{"unknown type", sp(7, ""), "", false, loaded, "", errdefs.ErrInvalidArgument},
		{"unknown legacy value", nil, "bogus", false, loaded, "", errdefs.ErrInvalidArgument},
		{"legacy localhost/ without a name", nil, "localhost/", false, loaded, "", errdefs.ErrInvalidArgument},
	}
	for _, c := range cases {
		got, err := apparmorProfile(c.sp, c.legacy, c.privileged, c.o)
		if c.class != nil {
			if !errors.Is(err, c.class) {
				t.Errorf("%s: got %q, %v; want %v", c.name, got, err, c.class)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

// TestSELinuxLabels: on an SELinux host options become a process and a
// mount label; privileged containers and empty options get none;
// injections are InvalidArgument on any host; on a host without SELinux
// valid options are left out (kubelet sends them whatever the host).
func TestSELinuxLabels(t *testing.T) {
	ctx := context.Background()
	p, m, err := selinuxLabels(ctx, &runtimeapi.SELinuxOption{Level: "s0:c1,c2"}, false, true)
	if err != nil || p != "system_u:system_r:container_t:s0:c1,c2" || m != "system_u:object_r:container_file_t:s0:c1,c2" {
		t.Fatalf("level only: %q %q %v", p, m, err)
	}
	p, m, err = selinuxLabels(ctx, &runtimeapi.SELinuxOption{User: "u", Role: "r", Type: "t", Level: "s1"}, false, true)
	if err != nil || p != "u:r:t:s1" || m != "u:object_r:container_file_t:s1" {
		t.Fatalf("all set: %q %q %v", p, m, err)
	}
	for _, so := range []*runtimeapi.SELinuxOption{nil, {}} {
		if p, m, err := selinuxLabels(ctx, so, false, true); p != "" || m != "" || err != nil {
			t.Fatalf("%v: %q %q %v", so, p, m, err)
		}
	}
	if p, m, err := selinuxLabels(ctx, &runtimeapi.SELinuxOption{Level: "s0"}, true, true); p != "" || m != "" || err != nil {
		t.Fatalf("privileged: %q %q %v", p, m, err)
	}
	// What kubelet sends for the node e2e EmptyDir specs, on a host
	// without SELinux: accepted, not in the spec.
	if p, m, err := selinuxLabels(ctx, &runtimeapi.SELinuxOption{User: "system_u", Role: "system_r", Type: "container_t", Level: "s0"}, false, false); p != "" || m != "" || err != nil {
		t.Fatalf("host without SELinux: %q %q %v", p, m, err)
	}
	for _, enabled := range []bool{true, false} {
		for _, so := range []*runtimeapi.SELinuxOption{{Type: "t:s0"}, {Level: "s0\n"}, {User: "u\x00"}, {Role: `r"`}} {
			if _, _, err := selinuxLabels(ctx, so, false, enabled); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("%q (SELinux %v): %v", so, enabled, err)
			}
		}
	}
}
