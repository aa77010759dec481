package specgen

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func findDevice(devs []specs.LinuxDevice, p string) *specs.LinuxDevice {
	for i := range devs {
		if devs[i].Path == p {
			return &devs[i]
		}
	}
	return nil
}

func TestDeviceLookup(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "null-link")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	devs, rules, err := containerDevices([]*runtimeapi.Device{
		{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"},
		{HostPath: link, ContainerPath: "/dev/linked"},
	}, false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/dev/mynull", "/dev/linked"} {
		d := findDevice(devs, p)
		if d == nil || d.Type != "c" || d.Major != 1 || d.Minor != 3 || d.FileMode == nil || d.FileMode.Perm() != 0o666 || d.UID == nil || *d.UID != 0 {
			t.Fatalf("%s: %+v", p, d)
		}
	}
	if len(rules) == 0 || rules[0].Allow || rules[0].Access != "rwm" || rules[0].Major != nil {
		t.Fatalf("first rule must deny everything: %+v", rules[0])
	}
	n := len(rules)
	if r := rules[n-2]; !r.Allow || r.Type != "c" || *r.Major != 1 || *r.Minor != 3 || r.Access != "rw" {
		t.Fatalf("rule for /dev/mynull: %+v", r)
	}
	if r := rules[n-1]; r.Access != "rwm" {
		t.Fatalf("empty permissions must mean rwm: %+v", r)
	}
	if len(rules) != 1+len(DefaultAllowedDevices)+2 {
		t.Fatalf("rules: %d", len(rules))
	}

	reg := filepath.Join(dir, "regular")
	writeFile(t, reg, "x")
	for _, tc := range []struct {
		name  string
		host  string
		class error
	}{
		{"missing", filepath.Join(dir, "missing"), errdefs.ErrNotFound},
		{"regular file", reg, errdefs.ErrInvalidArgument},
		{"empty directory", t.TempDir(), errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := containerDevices([]*runtimeapi.Device{{HostPath: tc.host, ContainerPath: "/dev/x"}}, false, Options{})
			wantClass(t, err, tc.class)
		})
	}
}

func TestDeviceDirectory(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "sub/zero"), unix.S_IFCHR|0o640, int(unix.Mkdev(1, 5))); err != nil {
		t.Skipf("needs a host where this process may mknod (root outside a restricted container): %v", err)
	}
	if err := unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "notadevice"), "x")
	devs, _, err := containerDevices([]*runtimeapi.Device{{HostPath: dir, ContainerPath: "/dev/set", Permissions: "r"}}, false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 {
		t.Fatalf("devices: %+v", devs)
	}
	if d := findDevice(devs, "/dev/set/sub/zero"); d == nil || d.Type != "c" || d.Major != 1 || d.Minor != 5 || d.FileMode.Perm() != 0o640 {
		t.Fatalf("zero: %+v", d)
	}
	if d := findDevice(devs, "/dev/set/blk"); d == nil || d.Type != "b" || d.Major != 7 || d.Minor != 200 {
		t.Fatalf("blk: %+v", d)
	}
}

func TestPrivilegedDevices(t *testing.T) {
	devs, rules, err := containerDevices([]*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/other-null"}}, true, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || !rules[0].Allow || rules[0].Access != "rwm" || rules[0].Type != "" || rules[0].Major != nil {
		t.Fatalf("privileged rules: %+v", rules)
	}
	if d := findDevice(devs, "/dev/null"); d == nil || d.Major != 1 || d.Minor != 3 {
		t.Fatalf("host /dev/null missing: %+v", d)
	}
	if findDevice(devs, "/dev/other-null") == nil {
		t.Fatal("the CRI device is missing")
	}
	for _, d := range devs {
		if d.Path == "/dev/console" || filepath.Dir(d.Path) == "/dev/pts" || d.Type == "p" {
			t.Fatalf("unexpected device %+v", d)
		}
	}
}

// Only privileged containers walk the host's /dev.
func TestDevNotWalkedUnlessPrivileged(t *testing.T) {
	saved := hostDevRoot
	hostDevRoot = filepath.Join(t.TempDir(), "no-such-dev")
	defer func() { hostDevRoot = saved }()
	if _, _, err := containerDevices(nil, false, Options{}); err != nil {
		t.Fatalf("unprivileged: %v", err)
	}
	if _, _, err := containerDevices(nil, true, Options{}); err == nil {
		t.Fatal("privileged did not look at the host's /dev")
	}
}

func TestAllowedDevicesOption(t *testing.T) {
	custom := []specs.LinuxDeviceCgroup{{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "rwm"}}
	_, rules, err := containerDevices(nil, false, Options{AllowedDevices: custom})
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].Allow || *rules[1].Minor != 229 {
		t.Fatalf("rules: %+v", rules)
	}
	*rules[1].Minor = 1
	if *custom[0].Minor != 229 {
		t.Fatal("the options' rules were shared with the spec")
	}
}
