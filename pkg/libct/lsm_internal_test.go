package libct

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// fakeLSMHost is a sysfs and procfs tree with AppArmor (profiles loaded
// as listed) and/or SELinux, and the calling thread's attr files.
func fakeLSMHost(t *testing.T, apparmor bool, profiles string, selinux bool, perModuleAttr bool) lsmHost {
	t.Helper()
	root := t.TempDir()
	h := lsmHost{sys: filepath.Join(root, "sys"), proc: filepath.Join(root, "proc")}
	write := func(rel, data string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/thread-self/attr/exec", "")
	if perModuleAttr {
		write("proc/thread-self/attr/apparmor/exec", "")
	}
	if apparmor {
		write("sys/module/apparmor/parameters/enabled", "Y\n")
		write("sys/kernel/security/apparmor/profiles", profiles)
	} else {
		// The module is built in but disabled at boot.
		write("sys/module/apparmor/parameters/enabled", "N\n")
	}
	if selinux {
		write("sys/fs/selinux/enforce", "1\n")
	}
	return h
}

func readAttr(t *testing.T, h lsmHost, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.proc, "thread-self/attr", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLSMRefusedOrApplied: a profile or label is applied where the host
// has it and refused (FailedPrecondition) where it does not, never
// dropped; RuntimeDefault's "no profile" and "unconfined" need nothing.
func TestLSMRefusedOrApplied(t *testing.T) {
	const loaded = "shim-test (enforce)\nother//child (complain)\n"
	cases := []struct {
		name     string
		apparmor bool
		selinux  bool
		p        specs.Process
		class    error  // nil: accepted
		attr     string // attr file written on apply
		want     string
	}{
		{"no profile on a host without LSMs", false, false, specs.Process{}, nil, "exec", ""},
		{"unconfined on a host without AppArmor", false, false, specs.Process{ApparmorProfile: "unconfined"}, nil, "exec", ""},
		{"profile on a host without AppArmor", false, false, specs.Process{ApparmorProfile: "shim-test"}, errdefs.ErrFailedPrecondition, "", ""},
		{"profile not loaded", true, false, specs.Process{ApparmorProfile: "missing"}, errdefs.ErrFailedPrecondition, "", ""},
		{"prefix of a loaded profile", true, false, specs.Process{ApparmorProfile: "shim"}, errdefs.ErrFailedPrecondition, "", ""},
		{"loaded profile", true, false, specs.Process{ApparmorProfile: "shim-test"}, nil, "apparmor/exec", "exec shim-test"},
		{"loaded child profile", true, false, specs.Process{ApparmorProfile: "other//child"}, nil, "apparmor/exec", "exec other//child"},
		{"profile with a newline", true, false, specs.Process{ApparmorProfile: "shim-test\nx"}, errdefs.ErrInvalidArgument, "", ""},
		{"label on a host without SELinux", false, false, specs.Process{SelinuxLabel: "system_u:system_r:container_t:s0"}, errdefs.ErrFailedPrecondition, "", ""},
		{"label on an SELinux host", false, true, specs.Process{SelinuxLabel: "system_u:system_r:container_t:s0:c1,c2"}, nil, "exec", "system_u:system_r:container_t:s0:c1,c2"},
		{"label with a NUL", false, true, specs.Process{SelinuxLabel: "system_u\x00"}, errdefs.ErrInvalidArgument, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := fakeLSMHost(t, c.apparmor, loaded, c.selinux, true)
			err := h.validateProcessLSM(&c.p)
			if c.class != nil {
				if !errors.Is(err, c.class) {
					t.Fatalf("got %v, want class %v", err, c.class)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := h.applyExecLSM(&c.p); err != nil {
				t.Fatal(err)
			}
			if c.attr != "" {
				if got := readAttr(t, h, c.attr); got != c.want {
					t.Fatalf("attr/%s = %q, want %q", c.attr, got, c.want)
				}
			}
		})
	}
}

// TestAppArmorOldKernelAttr: without attr/apparmor/ the profile goes to
// the shared attr/exec; a failing write is FailedPrecondition.
func TestAppArmorOldKernelAttr(t *testing.T) {
	h := fakeLSMHost(t, true, "shim-test (enforce)\n", false, false)
	p := &specs.Process{ApparmorProfile: "shim-test"}
	if err := h.applyExecLSM(p); err != nil {
		t.Fatal(err)
	}
	if got := readAttr(t, h, "exec"); got != "exec shim-test" {
		t.Fatalf("attr/exec = %q", got)
	}
	os.RemoveAll(filepath.Join(h.proc, "thread-self/attr"))
	if err := h.applyExecLSM(p); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("no attr files: %v", err)
	}
}

func TestMountLabel(t *testing.T) {
	const l = "system_u:object_r:container_file_t:s0:c1,c2"
	if err := fakeLSMHost(t, false, "", false, true).validateMountLabel(l); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("no SELinux: %v", err)
	}
	sel := fakeLSMHost(t, false, "", true, true)
	if err := sel.validateMountLabel(l); err != nil {
		t.Fatal(err)
	}
	if err := sel.validateMountLabel(`a"b`); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("quote: %v", err)
	}
	if err := fakeLSMHost(t, false, "", false, true).validateMountLabel(""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ typ, data, want string }{
		{"tmpfs", "size=1m", `size=1m,context="` + l + `"`},
		{"devpts", "", `context="` + l + `"`},
		{"proc", "", ""},
		{"sysfs", "ro", "ro"},
		{"mqueue", "", ""},
	} {
		if got := mountLabelData(c.typ, c.data, l); got != c.want {
			t.Errorf("%s %q: %q, want %q", c.typ, c.data, got, c.want)
		}
	}
	if got := mountLabelData("tmpfs", "size=1m", ""); got != "size=1m" {
		t.Errorf("no label: %q", got)
	}
}

// TestLSMFeatures: the OCI features and HostLSM say what this host has.
func TestLSMFeatures(t *testing.T) {
	f := Features()
	lsm := HostLSM()
	if *f.Linux.Apparmor.Enabled != lsm.AppArmor || *f.Linux.Selinux.Enabled != lsm.SELinux {
		t.Fatalf("features %v/%v, host %+v", *f.Linux.Apparmor.Enabled, *f.Linux.Selinux.Enabled, lsm)
	}
	_, err := os.Stat("/sys/kernel/security/apparmor")
	if lsm.AppArmor && err != nil {
		t.Fatalf("AppArmor reported without securityfs: %v", err)
	}
	_, err = os.Stat("/sys/fs/selinux/enforce")
	if lsm.SELinux != (err == nil) {
		t.Fatalf("SELinux %v, selinuxfs: %v", lsm.SELinux, err)
	}
}
