package libct_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

// hostMounts returns the host's mounts that involve one of dirs (other
// engineers' tests mount things on this machine concurrently).
func hostMounts(t *testing.T, dirs ...string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, d := range dirs {
			if strings.Contains(l, d) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func dirEntries(t *testing.T, dir string) []string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestHostileBundles: each bundle is refused with an error of the given
// class, and nothing changes on the host: no mount, nothing written in the
// host directory the bundle aims at, no state dir, no cgroup.
func TestHostileBundles(t *testing.T) {
	needRoot(t)
	for _, tc := range hostileBundles() {
		t.Run(tc.name, func(t *testing.T) {
			b := sh(t, "true")
			host := t.TempDir()
			os.WriteFile(filepath.Join(host, "sentinel"), []byte("host"), 0o644)
			before := hostMounts(t, b.Dir, host)
			tc.setup(t, b, host)
			x, err := create(t, b, libct.CreateOpts{})
			if err == nil {
				x.c.Delete(ctx(t), true)
				t.Fatalf("created; want %v", tc.class)
			}
			if !errors.Is(err, tc.class) {
				t.Fatalf("error %v (class %s), want class %v", err, errdefs.Class(err), tc.class)
			}
			if after := hostMounts(t, b.Dir, host); after != before {
				t.Errorf("host mounts changed")
			}
			if got := dirEntries(t, host); len(got) != 1 || got[0] != "sentinel" {
				t.Errorf("host dir changed: %v", got)
			}
			if _, err := os.Stat(filepath.Join(x.root, x.id)); !os.IsNotExist(err) {
				t.Errorf("state dir left behind")
			}
			if !cgroupGone("/shim/" + x.id) {
				t.Errorf("cgroup left behind")
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

// TestSymlinkInsideRootStaysInside: an intermediate symlink to an absolute
// path is resolved inside the root, never on the host.
func TestSymlinkInsideRootStaysInside(t *testing.T) {
	needRoot(t)
	host := t.TempDir()
	b := sh(t, "cat /inner/planted; ls "+host)
	os.MkdirAll(filepath.Join(b.Rootfs, host), 0o755)
	os.Symlink(host, filepath.Join(b.Rootfs, "evil"))
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "planted"), []byte("planted\n"), 0o644)
	// /evil/inner -> <rootfs><host>/inner, never <host>/inner.
	b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/evil/inner", Type: "bind", Source: src, Options: []string{"rbind"}})
	b.Spec.Process.Args = []string{"/bin/sh", "-c", "cat " + host + "/inner/planted"}
	out, es := run(t, b)
	if es.Code != 0 || out != "planted\n" {
		t.Fatalf("exit %d: %q", es.Code, out)
	}
	if ents := dirEntries(t, host); len(ents) != 0 {
		t.Fatalf("host dir %s changed: %v", host, ents)
	}
}

// TestCwdSymlinkStaysInside: a cwd that is a symlink to a host path is the
// container's directory of that name.
func TestCwdSymlinkStaysInside(t *testing.T) {
	needRoot(t)
	b := sh(t, "pwd -P; cat passwd | head -1")
	os.Symlink("/etc", filepath.Join(b.Rootfs, "work"))
	b.Spec.Process.Cwd = "/work"
	out, _ := run(t, b)
	if out != "/etc\nroot:x:0:0:root:/root:/bin/sh\n" {
		t.Fatalf("got %q", out)
	}
}

// hostileBundle is a bundle change Create must refuse with class, check
// (if set) asserting the host is untouched beyond the common checks.
type hostileBundle struct {
	name  string
	setup func(t *testing.T, b *testbundle.Bundle, host string)
	class error
	check func(t *testing.T)
}

func hostileBundles() []hostileBundle {
	return append(hostilePaths(), hostileSettings()...)
}

// hostilePaths aim the container's paths at the host.
func hostilePaths() []hostileBundle {
	return []hostileBundle{
		{"proc is a symlink to a host path", func(t *testing.T, b *testbundle.Bundle, host string) {
			os.Remove(filepath.Join(b.Rootfs, "proc"))
			os.Symlink(host, filepath.Join(b.Rootfs, "proc"))
		}, errdefs.ErrInvalidArgument, nil},
		{"dev is a symlink to a host path", func(t *testing.T, b *testbundle.Bundle, host string) {
			os.Remove(filepath.Join(b.Rootfs, "dev"))
			os.Symlink(host, filepath.Join(b.Rootfs, "dev"))
		}, errdefs.ErrInvalidArgument, nil},
		{"dev/null is a symlink to a host path", func(t *testing.T, b *testbundle.Bundle, host string) {
			// No tmpfs on /dev: devices are made in the image's /dev.
			var ms []specs.Mount
			for _, m := range b.Spec.Mounts {
				if !strings.HasPrefix(m.Destination, "/dev") {
					ms = append(ms, m)
				}
			}
			b.Spec.Mounts = ms
			os.Symlink(filepath.Join(host, "null"), filepath.Join(b.Rootfs, "dev", "null"))
		}, errdefs.ErrInvalidArgument, nil},
		{"dev/null is not the null device", func(t *testing.T, b *testbundle.Bundle, host string) {
			// A bind-mounted /dev whose null is a regular file: masking
			// with it would expose the file's content.
			fake := filepath.Join(b.Dir, "fakedev")
			os.Mkdir(fake, 0o755)
			os.WriteFile(filepath.Join(fake, "null"), []byte("secret"), 0o644)
			var ms []specs.Mount
			for _, m := range b.Spec.Mounts {
				if !strings.HasPrefix(m.Destination, "/dev") {
					ms = append(ms, m)
				}
			}
			b.Spec.Mounts = append(ms, specs.Mount{Destination: "/dev", Type: "bind", Source: fake, Options: []string{"rbind"}})
		}, errdefs.ErrPermissionDenied, nil},
		{"mount destination is a symlink to a host path", func(t *testing.T, b *testbundle.Bundle, host string) {
			os.Symlink(host, filepath.Join(b.Rootfs, "data"))
			src := t.TempDir()
			os.WriteFile(filepath.Join(src, "planted"), []byte("x"), 0o644)
			b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind"}})
		}, errdefs.ErrInvalidArgument, nil},
		{"tmpfs destination is a symlink to a host path", func(t *testing.T, b *testbundle.Bundle, host string) {
			os.Symlink(host, filepath.Join(b.Rootfs, "scratch"))
			b.Spec.Mounts = append(b.Spec.Mounts, specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs"})
		}, errdefs.ErrInvalidArgument, nil},
		{"relative cwd", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Process.Cwd = "../../../../.."
		}, errdefs.ErrInvalidArgument, nil},
	}
}

// hostileSettings ask for settings that would change the host or that
// no kernel accepts.
func hostileSettings() []hostileBundle {
	var pidMax []byte
	return []hostileBundle{
		{"unnamespaced sysctl", func(t *testing.T, b *testbundle.Bundle, host string) {
			pidMax, _ = os.ReadFile("/proc/sys/kernel/pid_max")
			b.Spec.Linux.Sysctl = map[string]string{"kernel.pid_max": "4242"}
		}, errdefs.ErrInvalidArgument, func(t *testing.T) {
			if now, _ := os.ReadFile("/proc/sys/kernel/pid_max"); string(now) != string(pidMax) {
				t.Errorf("host kernel.pid_max changed: %s -> %s", pidMax, now)
			}
		}},
		{"net sysctl without a network namespace", func(t *testing.T, b *testbundle.Bundle, host string) {
			var ns []specs.LinuxNamespace
			for _, n := range b.Spec.Linux.Namespaces {
				if n.Type != specs.NetworkNamespace {
					ns = append(ns, n)
				}
			}
			b.Spec.Linux.Namespaces = ns
			b.Spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
		}, errdefs.ErrInvalidArgument, nil},
		{"sysctl path traversal", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Linux.Sysctl = map[string]string{"net/../../../kernel/pid_max": "4242"}
		}, errdefs.ErrInvalidArgument, nil},
		{"negative memory limit", func(t *testing.T, b *testbundle.Bundle, host string) {
			v := int64(-5)
			b.Spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &v}
		}, errdefs.ErrInvalidArgument, nil},
		{"absurdly small memory limit", func(t *testing.T, b *testbundle.Bundle, host string) {
			v := int64(1)
			b.Spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &v}
		}, errdefs.ErrInvalidArgument, nil},
		{"cpu shares out of range", func(t *testing.T, b *testbundle.Bundle, host string) {
			v := uint64(1 << 40)
			b.Spec.Linux.Resources.CPU = &specs.LinuxCPU{Shares: &v}
		}, errdefs.ErrInvalidArgument, nil},
		{"cpu quota below 1ms", func(t *testing.T, b *testbundle.Bundle, host string) {
			v := int64(5)
			b.Spec.Linux.Resources.CPU = &specs.LinuxCPU{Quota: &v}
		}, errdefs.ErrInvalidArgument, nil},
		{"negative pids limit", func(t *testing.T, b *testbundle.Bundle, host string) {
			v := int64(-7)
			b.Spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &v}
		}, errdefs.ErrInvalidArgument, nil},
		{"blkio weight out of range", func(t *testing.T, b *testbundle.Bundle, host string) {
			v := uint16(5000)
			b.Spec.Linux.Resources.BlockIO = &specs.LinuxBlockIO{Weight: &v}
		}, errdefs.ErrInvalidArgument, nil},
		{"oomScoreAdj out of range", func(t *testing.T, b *testbundle.Bundle, host string) {
			v := 5000
			b.Spec.Process.OOMScoreAdj = &v
		}, errdefs.ErrInvalidArgument, nil},
		{"unknown capability", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Process.Capabilities.Bounding = append(b.Spec.Process.Capabilities.Bounding, "CAP_EVERYTHING")
		}, errdefs.ErrInvalidArgument, nil},
		{"hostname without a UTS namespace", func(t *testing.T, b *testbundle.Bundle, host string) {
			var ns []specs.LinuxNamespace
			for _, n := range b.Spec.Linux.Namespaces {
				if n.Type != specs.UTSNamespace {
					ns = append(ns, n)
				}
			}
			b.Spec.Linux.Namespaces = ns
		}, errdefs.ErrInvalidArgument, nil},
		{"cgroups path is the root", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Linux.CgroupsPath = "/"
		}, errdefs.ErrInvalidArgument, nil},
		{"systemd cgroup path", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Linux.CgroupsPath = "system.slice:shim:x"
		}, errdefs.ErrNotImplemented, nil},
		{"rlimit soft above hard", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 100, Hard: 10}}
		}, errdefs.ErrInvalidArgument, nil},
		{"seccomp unknown action", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_EXPLODE"}
		}, errdefs.ErrInvalidArgument, nil},
		{"empty args", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Process.Args = nil
		}, errdefs.ErrInvalidArgument, nil},
		{"rootfs missing", func(t *testing.T, b *testbundle.Bundle, host string) {
			b.Spec.Root.Path = "nonexistent"
		}, errdefs.ErrNotFound, nil},
	}

}
