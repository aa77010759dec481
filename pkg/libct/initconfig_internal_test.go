package libct

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestInitConfigWire: what the parent sends reaches the Go init through
// its own end of the pipe (initEnd), with every part of the spec the init
// reads, the detached mount fds attached, and nothing of the spec the init
// does not read.
func TestInitConfigWire(t *testing.T) {
	conn, child, err := initPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer child.Close()
	spec := &specs.Spec{
		Version:     specs.Version,
		Process:     &specs.Process{Args: []string{"sh"}, Cwd: "/", Env: []string{"A=1"}},
		Root:        &specs.Root{Path: "/r", Readonly: true},
		Hostname:    "h",
		Domainname:  "d",
		Mounts:      []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid"}}},
		Hooks:       &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/bin/true", Args: []string{"true"}}}},
		Annotations: map[string]string{"a": "b"},
		Linux: &specs.Linux{
			Devices:           []specs.LinuxDevice{{Path: "/dev/x", Type: "c", Major: 1, Minor: 3}},
			Sysctl:            map[string]string{"net.ipv4.ip_forward": "1"},
			Seccomp:           &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdir"}, Action: specs.ActErrno}}},
			RootfsPropagation: "rslave",
			MaskedPaths:       []string{"/proc/kcore"},
			ReadonlyPaths:     []string{"/proc/sys"},
			MountLabel:        "l",
			// Not for the init:
			Resources:   &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(5)}},
			CgroupsPath: "/x",
			Namespaces:  []specs.LinuxNamespace{{Type: specs.PIDNamespace}},
			UIDMappings: []specs.LinuxIDMapping{{HostID: 1000, Size: 1}},
		},
	}
	sent := &initConfig{Mode: modeCreate, ID: "c1", Spec: spec, Process: spec.Process, Rootfs: "/r", Bundle: "/b",
		NewMountNS: true, CgroupPath: "/x", MountFds: []int{0}}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if err := writeFrame(conn, sent, int(devnull.Fd())); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(child.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	end := initEnd(fd)
	defer unix.Close(fd)
	got, err := readInitConfig(end)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.mountFiles) != 1 || got.preparedMount(0) == nil {
		t.Errorf("mount fds: %v", got.mountFiles)
	}
	want := &specs.Spec{Root: spec.Root, Mounts: spec.Mounts, Hooks: spec.Hooks, Hostname: "h", Domainname: "d",
		Annotations: spec.Annotations, Linux: &specs.Linux{Devices: spec.Linux.Devices, Sysctl: spec.Linux.Sysctl,
			Seccomp: spec.Linux.Seccomp, RootfsPropagation: "rslave", MaskedPaths: spec.Linux.MaskedPaths,
			ReadonlyPaths: spec.Linux.ReadonlyPaths, MountLabel: "l"}}
	if !reflect.DeepEqual(got.Spec, want) {
		t.Errorf("the init's spec:\n%+v\nwant\n%+v", got.Spec, want)
	}
	if got.Mode != modeCreate || got.ID != "c1" || got.Rootfs != "/r" || got.Bundle != "/b" || !got.NewMountNS ||
		got.CgroupPath != "/x" || !reflect.DeepEqual(got.Process, spec.Process) {
		t.Errorf("the init's config: %+v", got)
	}
	// The init's answer reaches the parent; the parent's close is EOF.
	if err := reportReady(end); err != nil {
		t.Fatal(err)
	}
	var m initMsg
	if _, err := readFrame(conn, &m); err != nil || m.Type != msgReady {
		t.Errorf("ready: %+v %v", m, err)
	}
	conn.Close()
	if _, err := readFrame(end, &m); err == nil {
		t.Error("read after the parent closed: no error")
	}
}

// TestSealedExeFallback: an init binary that cannot be opened leaves the
// inits to this binary (which has the init too), not to an error.
func TestSealedExeFallback(t *testing.T) {
	f, err := makeSealedExe(filepath.Join(t.TempDir(), "shim-init-missing"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat("/proc/self/exe", &b); err != nil {
		t.Fatal(err)
	}
	if a.Size != b.Size {
		t.Errorf("sealed exe of %d bytes, want this binary's %d", a.Size, b.Size)
	}
}
