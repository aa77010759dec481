package monitor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
)

// cinitReport is what the container process writes about itself: its
// ids, capabilities, no_new_privs, seccomp, limits, umask, cwd,
// environment, hostnames, sysctl, devices, mounts (without ids and
// host paths) and what its read-only root refuses.
const cinitReport = `exec > /out/report 2>&1
echo "pwd $(pwd) umask $(umask)"
echo "host $(hostname) $(cat /proc/sys/kernel/domainname) shm_rmid_forced $(cat /proc/sys/kernel/shm_rmid_forced)"
id
env | sort
grep -E '^(Uid|Gid|Groups|Cap|NoNewPrivs|Seccomp)' /proc/self/status
cat /proc/self/limits
ls -ln /dev /dev/pts | sed -E 's/ +[A-Z][a-z]{2} +[0-9]+ +[0-9:]+ / /'
for l in /dev/ptmx /dev/fd /dev/stdin /dev/stdout /dev/stderr; do echo "$l -> $(readlink $l)"; done
sed -E 's/^[0-9]+ [0-9]+ [0-9]+:[0-9]+ [^ ]+ //; s/ (shared|master|propagate_from):[0-9]+//g' /proc/self/mountinfo
cat /proc/self/cgroup
ls /sys/fs/cgroup
cat /proc/kcore | head -c 1; echo "kcore $?"
touch /x; echo "touch / $?"
touch /out/x; echo "touch /out $?"
echo 1 > /proc/sys/kernel/shm_rmid_forced; echo "sysctl write $?"
dmesg > /dev/null; echo "dmesg $?"
`

// cinitSpec is a container with most of what the C init does: binds of
// a directory and a file, a read-only root, masked and read-only paths,
// a cgroup mount, a device, sysctl, host and domain names, another user
// with groups, ambient capabilities, rlimits set early and late,
// no_new_privs, a seccomp filter, a cwd to make, HOME from /etc/passwd.
func cinitSpec(t *testing.T, p *testPod, out string) *specs.Spec {
	b := p.newBundle(t, "sh", "-c", cinitReport)
	s := b.Spec
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("bound\n"), 0o644)
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/out", Type: "bind", Source: out, Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/etc/bound", Type: "bind", Source: file, Options: []string{"rbind", "ro", "nosuid"}},
	)
	s.Domainname = "example"
	s.Linux.Sysctl = map[string]string{"kernel.shm_rmid_forced": "1"}
	mode := os.FileMode(0o640)
	uid, gid := uint32(0), uint32(5)
	s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/loop-control", Type: "c", Major: 10, Minor: 237, FileMode: &mode, UID: &uid, GID: &gid}}
	s.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{5, 6}}
	s.Process.Cwd = "/home/work/sub"
	caps := []string{"CAP_NET_BIND_SERVICE", "CAP_KILL"}
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps, Inheritable: caps, Ambient: caps[:1]}
	s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_AS", Hard: 1 << 32, Soft: 1 << 31},
		specs.POSIXRlimit{Type: "RLIMIT_NPROC", Hard: 500, Soft: 400})
	s.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"syslog"}, Action: specs.ActErrno}},
	}
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	s.Root.Path = b.Rootfs
	return s
}

// runReport creates container id directly (the C init on or off), checks
// which init waits for the start, starts it and returns its report.
func runReport(t *testing.T, p *testPod, id string, cinit bool) string {
	ctx := context.Background()
	out := t.TempDir()
	os.Chmod(out, 0o777)
	s := cinitSpec(t, p, out)
	bundle := filepath.Dir(s.Root.Path)
	// Off: for a monitor whose init binary may predate the C init.
	if ok, err := libct.PrepareCreate(ctx, p.root, id, s, bundle, cinit); err != nil || !ok {
		t.Fatalf("prepare: %v %v", ok, err)
	}
	tmpl, _ := os.ReadFile(filepath.Join(p.root, id, libct.CreateTemplateFile))
	if got := strings.Contains(string(tmpl), "SHIMCPLAN1"); got != cinit {
		t.Fatalf("the create template has a C plan: %v, want %v", got, cinit)
	}
	resp, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: id, Bundle: bundle, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := libct.CommitCreate(p.root, id, resp.Pid); err != nil {
		t.Fatal(err)
	}
	// The init waiting for the start: the C init is one thread (no Go
	// runtime started), the Go init several.
	if th := procStatus(t, resp.Pid)["Threads"]; (th == "1") != cinit {
		t.Errorf("init with the C init %v has %s threads", cinit, th)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: id}); err != nil {
		t.Fatal(err)
	}
	if rec := waitExit(t, bundle); rec.Code != 0 {
		t.Errorf("exit %+v", rec)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpDelete, ID: id, Force: true}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "report"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCInitSame: a container set up by the C init sees what one set up
// by the Go init sees.
func TestCInitSame(t *testing.T) {
	bin := initBinary(t)
	p := spawnMonitor(t, "--init-binary", bin)
	if st, err := p.c.Call(context.Background(), &Request{Op: OpState}); err != nil || !st.CInit || !p.c.CInit() {
		t.Fatalf("the monitor does not say its inits run C init plans: %+v %v", st, err)
	}
	goInit := runReport(t, p, "go1", false)
	cInit := runReport(t, p, "c1", true)
	for _, want := range []string{"uid=1000", "groups=5", "NoNewPrivs:\t1", "Seccomp:\t2", "/out ", "/etc/bound ",
		"HOME=/", "pwd /home/work/sub", "host shim example shm_rmid_forced 1", "touch / 1", "touch /out 0", "dmesg 1",
		"loop-control", "/dev/ptmx -> pts/ptmx"} {
		if !strings.Contains(cInit, want) && !strings.Contains(strings.ReplaceAll(cInit, "\n", " "), want) {
			t.Errorf("the C init's container report lacks %q", want)
		}
	}
	if goInit != cInit {
		gl, cl := strings.Split(goInit, "\n"), strings.Split(cInit, "\n")
		for i := 0; i < max(len(gl), len(cl)); i++ {
			var g, c string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(cl) {
				c = cl[i]
			}
			if g != c {
				t.Errorf("line %d: Go init %q, C init %q", i+1, g, c)
			}
		}
		t.Logf("the C init's container report:\n%s", cInit)
	}
}

// TestCInitError: a failure in the C init is a typed error of the
// create, as the Go init's is.
func TestCInitError(t *testing.T) {
	bin := initBinary(t)
	p := spawnMonitor(t, "--init-binary", bin)
	ctx := context.Background()
	for _, cinit := range []bool{false, true} {
		b := p.newBundle(t, "/no/such/binary")
		if err := b.Write(); err != nil {
			t.Fatal(err)
		}
		id := map[bool]string{false: "ego", true: "ec"}[cinit]
		if ok, err := libct.PrepareCreate(ctx, p.root, id, b.Spec, b.Dir, cinit); err != nil || !ok {
			t.Fatalf("prepare: %v %v", ok, err)
		}
		_, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: id, Bundle: b.Dir, Direct: true})
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "/no/such/binary") {
			t.Errorf("C init %v: create of a missing binary: %v, want not found", cinit, err)
		}
		p.c.Call(ctx, &Request{Op: OpDelete, ID: id, Force: true})
	}
}
