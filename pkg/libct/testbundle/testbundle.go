// Package testbundle builds OCI bundles with a busybox root filesystem for
// tests: /bin/busybox (busybox-static) with every applet as a hard link.
package testbundle

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Busybox is the static busybox the bundles are built from.
const Busybox = "/bin/busybox"

var (
	appletsOnce sync.Once
	applets     []string
	appletsErr  error
)

// Available reports whether a static busybox is installed.
func Available() bool {
	_, err := os.Stat(Busybox)
	return err == nil
}

func listApplets() ([]string, error) {
	appletsOnce.Do(func() {
		out, err := exec.Command(Busybox, "--list").Output()
		if err != nil {
			appletsErr = err
			return
		}
		applets = strings.Fields(string(out))
	})
	return applets, appletsErr
}

// Rootfs builds a busybox root filesystem in dir. The busybox binary is
// copied once into dir and every applet is a hard link to it.
func Rootfs(dir string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	bb := filepath.Join(dir, "bin", "busybox")
	src, err := os.ReadFile(Busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(bb, src, 0o755); err != nil {
		return err
	}
	apps, err := listApplets()
	if err != nil {
		return err
	}
	for _, a := range apps {
		if a == "busybox" {
			continue
		}
		if err := os.Link(bb, filepath.Join(dir, "bin", a)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
		"etc/group":  "root:x:0:\nnobody:x:65534:\nuser:x:1000:\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Spec returns a runc-like default spec ("runc spec") running args.
func Spec(args ...string) *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Hostname: "shim",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
				"/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
		},
	}
}

// Bundle is a bundle directory with a rootfs and a spec.
type Bundle struct {
	Dir    string
	Rootfs string
	Spec   *specs.Spec
}

// New builds a bundle in a test temp dir. The caller edits b.Spec and
// calls Write (or passes b.Spec to libct directly).
func New(t testing.TB, args ...string) *Bundle {
	t.Helper()
	if !Available() {
		t.Skip("needs busybox-static at " + Busybox)
	}
	dir := t.TempDir()
	// t.TempDir is 0700; the container may run as another user.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	b := &Bundle{Dir: dir, Rootfs: filepath.Join(dir, "rootfs"), Spec: Spec(args...)}
	if err := Rootfs(b.Rootfs); err != nil {
		t.Fatalf("build rootfs: %v", err)
	}
	return b
}

// Write writes config.json.
func (b *Bundle) Write() error {
	data, err := json.MarshalIndent(b.Spec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.Dir, "config.json"), data, 0o644)
}
