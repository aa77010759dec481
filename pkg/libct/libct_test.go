package libct_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"golang.org/x/sys/unix"
)

func TestNamespaces(t *testing.T) {
	needRoot(t)
	b := sh(t, "for n in pid net ipc uts mnt cgroup user; do echo $n=$(readlink /proc/self/ns/$n); done")
	out, es := run(t, b)
	if es.Code != 0 {
		t.Fatalf("exit %d: %s", es.Code, out)
	}
	for _, n := range []string{"pid", "net", "ipc", "uts", "mnt", "cgroup", "user"} {
		host, _ := os.Readlink("/proc/self/ns/" + n)
		got := field(strings.ReplaceAll(out, "=", ":"), n)
		if got == "" {
			t.Fatalf("no %s namespace in output: %s", n, out)
		}
		if n == "user" {
			if got != host {
				t.Errorf("user namespace %s differs from host %s without a user namespace in the spec", got, host)
			}
			continue
		}
		if got == host {
			t.Errorf("%s namespace is the host's (%s)", n, got)
		}
	}
}

func TestJoinNamespaceByPath(t *testing.T) {
	needRoot(t)
	// A container joins the network namespace of another one by path.
	b1 := sh(t, "sleep 30")
	x1, err := create(t, b1, libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := x1.c.State()
	b2 := sh(t, "readlink /proc/self/ns/net")
	for i, ns := range b2.Spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			b2.Spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/net", st.Pid)
		}
	}
	out, _ := run(t, b2)
	want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", st.Pid))
	if strings.TrimSpace(out) != want {
		t.Fatalf("joined net ns %q, want %q", out, want)
	}
}

func TestHostnameDomainname(t *testing.T) {
	needRoot(t)
	b := sh(t, "hostname; cat /proc/sys/kernel/domainname")
	b.Spec.Hostname = "box1"
	b.Spec.Domainname = "example.test"
	out, _ := run(t, b)
	if out != "box1\nexample.test\n" {
		t.Fatalf("got %q", out)
	}
}

func mountLine(mountinfo, mountpoint string) string {
	for _, l := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == mountpoint {
			return l
		}
	}
	return ""
}

func hasOpt(line string, opts ...string) bool {
	f := strings.Fields(line)
	if len(f) < 6 {
		return false
	}
	have := map[string]bool{}
	for _, o := range strings.Split(f[5], ",") {
		have[o] = true
	}
	for _, o := range opts {
		if !have[o] {
			return false
		}
	}
	return true
}

func TestMountsAndFlags(t *testing.T) {
	needRoot(t)
	b := sh(t, "cat /proc/self/mountinfo")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	b.Spec.Mounts = append(b.Spec.Mounts,
		specs.Mount{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind", "ro", "nosuid", "nodev"}},
		specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"noexec", "nosuid", "size=1m"}},
		specs.Mount{Destination: "/datafile", Type: "bind", Source: filepath.Join(src, "f"), Options: []string{"bind", "ro"}},
		specs.Mount{Destination: "/rro", Type: "bind", Source: src, Options: []string{"rbind", "rro"}},
	)
	out, es := run(t, b)
	if es.Code != 0 {
		t.Fatalf("exit %d: %s", es.Code, out)
	}
	checks := []struct {
		mp   string
		opts []string
	}{
		{"/", []string{"ro"}},
		{"/proc", []string{"rw"}},
		{"/sys", []string{"ro", "nosuid", "nodev", "noexec"}},
		{"/dev/shm", []string{"nosuid", "nodev", "noexec"}},
		{"/data", []string{"ro", "nosuid", "nodev"}},
		{"/scratch", []string{"rw", "nosuid", "noexec"}},
		{"/datafile", []string{"ro"}},
		{"/rro", []string{"ro"}},
		{"/dev/pts", []string{"nosuid", "noexec"}},
		{"/dev/mqueue", []string{"nosuid", "nodev", "noexec"}},
		{"/sys/fs/cgroup", []string{"ro"}},
	}
	for _, c := range checks {
		l := mountLine(out, c.mp)
		if l == "" {
			t.Errorf("no mount at %s:\n%s", c.mp, out)
			continue
		}
		if !hasOpt(l, c.opts...) {
			t.Errorf("mount %s: want %v in %q", c.mp, c.opts, l)
		}
	}
	if l := mountLine(out, "/sys/fs/cgroup/memory"); l == "" || !hasOpt(l, "ro") {
		t.Errorf("no read-only /sys/fs/cgroup/memory: %q", l)
	}
}

func TestMaskedAndReadonlyPaths(t *testing.T) {
	needRoot(t)
	b := sh(t, `echo keys=$(wc -c < /proc/keys); echo acpi=$(ls /proc/acpi | wc -l);
if echo 1 > /proc/sys/vm/overcommit_memory 2>/dev/null; then echo sys=writable; else echo sys=readonly; fi
if touch /newfile 2>/dev/null; then echo root=writable; else echo root=readonly; fi`)
	out, _ := run(t, b)
	for _, want := range []string{"keys=0", "acpi=0", "sys=readonly", "root=readonly"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %s in output:\n%s", want, out)
		}
	}
}

func capMask(names ...string) uint64 {
	var m uint64
	for _, n := range names {
		for i, c := range libct.CapabilityNames() {
			if c == n {
				m |= 1 << uint(i)
			}
		}
	}
	return m
}

func TestCapabilities(t *testing.T) {
	needRoot(t)
	b := sh(t, "cat /proc/self/status")
	b.Spec.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding:  []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"},
		Effective: []string{"CAP_CHOWN", "CAP_KILL"},
		Permitted: []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"},
	}
	out, _ := run(t, b)
	// As root, execve makes the effective set the permitted one.
	want := map[string]uint64{
		"CapBnd": capMask("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"),
		"CapEff": capMask("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"),
		"CapPrm": capMask("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"),
		"CapInh": 0,
		"CapAmb": 0,
	}
	for k, v := range want {
		got, err := strconv.ParseUint(field(out, k), 16, 64)
		if err != nil || got != v {
			t.Errorf("%s = %s, want %016x", k, field(out, k), v)
		}
	}
}

func TestAmbientCapsNonRoot(t *testing.T) {
	needRoot(t)
	b := sh(t, "cat /proc/self/status")
	all := []string{"CAP_NET_BIND_SERVICE"}
	b.Spec.Process.User = specs.User{UID: 1000, GID: 1000}
	b.Spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all, Inheritable: all, Ambient: all}
	out, _ := run(t, b)
	m := capMask("CAP_NET_BIND_SERVICE")
	for _, k := range []string{"CapEff", "CapAmb"} {
		got, _ := strconv.ParseUint(field(out, k), 16, 64)
		if got != m {
			t.Errorf("%s = %s, want %016x", k, field(out, k), m)
		}
	}
}

func TestSeccompErrno(t *testing.T) {
	needRoot(t)
	b := sh(t, "mkdir /tmp/x; echo rc=$?; cat /proc/self/status | grep ^Seccomp:")
	b.Spec.Root.Readonly = false
	errno := uint(unix.EXDEV)
	b.Spec.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &errno},
			// argument conditions: personality(0xffffffff) is allowed,
			// others fail with the default errno (EPERM).
			{Names: []string{"personality"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xdead, Op: specs.OpEqualTo}}},
		},
	}
	out, _ := run(t, b)
	if !strings.Contains(out, "Invalid cross-device link") || !strings.Contains(out, "rc=1") {
		t.Errorf("mkdir not refused with EXDEV:\n%s", out)
	}
	if field(out, "Seccomp") != "2" {
		t.Errorf("Seccomp mode %q, want 2 (filter)", field(out, "Seccomp"))
	}
}

func TestSeccompWithoutNoNewPrivs(t *testing.T) {
	needRoot(t)
	b := sh(t, "mkdir /tmp/x 2>&1; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
	b.Spec.Root.Readonly = false
	b.Spec.Process.NoNewPrivileges = false
	b.Spec.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno}},
	}
	out, _ := run(t, b)
	if !strings.Contains(out, "Operation not permitted") || field(out, "NoNewPrivs") != "0" || field(out, "Seccomp") != "2" {
		t.Errorf("got:\n%s", out)
	}
}

func TestNoNewPrivs(t *testing.T) {
	needRoot(t)
	for _, nnp := range []bool{true, false} {
		b := sh(t, "grep ^NoNewPrivs: /proc/self/status")
		b.Spec.Process.NoNewPrivileges = nnp
		out, _ := run(t, b)
		want := "0"
		if nnp {
			want = "1"
		}
		if field(out, "NoNewPrivs") != want {
			t.Errorf("nnp=%v: got %q", nnp, out)
		}
	}
}

func TestUserAndGroups(t *testing.T) {
	needRoot(t)
	b := sh(t, "id -u; id -g; grep ^Groups: /proc/self/status; umask")
	um := uint32(0o027)
	b.Spec.Process.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{10, 20}, Umask: &um}
	out, _ := run(t, b)
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || lines[0] != "1000" || lines[1] != "1001" || field(out, "Groups") != "10 20" || lines[3] != "0027" {
		t.Fatalf("got %q", out)
	}
}

func TestRlimits(t *testing.T) {
	needRoot(t)
	b := sh(t, "ulimit -n; ulimit -Hn; ulimit -c")
	b.Spec.Process.Rlimits = []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Soft: 123, Hard: 456},
		{Type: "RLIMIT_CORE", Soft: 0, Hard: 0},
	}
	out, _ := run(t, b)
	if out != "123\n456\n0\n" {
		t.Fatalf("got %q", out)
	}
}

func TestRlimitAboveHardLimit(t *testing.T) {
	needRoot(t)
	var cur unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &cur)
	if capEffective()&(1<<unix.CAP_SYS_RESOURCE) != 0 || cur.Max == unix.RLIM_INFINITY {
		t.Skip("needs a host where this process lacks CAP_SYS_RESOURCE (this one can raise hard limits)")
	}
	b := sh(t, "true")
	b.Spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 10, Hard: cur.Max + 1}}
	_, err := create(t, b, libct.CreateOpts{})
	if !errdefs.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "RLIMIT_NOFILE") {
		t.Fatalf("want a permission error naming RLIMIT_NOFILE, got %v", err)
	}
}

func capEffective() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	v, _ := strconv.ParseUint(field(string(b), "CapEff"), 16, 64)
	return v
}

func TestOOMScoreAdj(t *testing.T) {
	needRoot(t)
	cur, _ := os.ReadFile("/proc/self/oom_score_adj")
	curV, _ := strconv.Atoi(strings.TrimSpace(string(cur)))
	// Raising always works.
	b := sh(t, "cat /proc/self/oom_score_adj")
	up := curV + 100
	if up > 1000 {
		up = 1000
	}
	b.Spec.Process.OOMScoreAdj = &up
	out, _ := run(t, b)
	if strings.TrimSpace(out) != strconv.Itoa(up) {
		t.Errorf("oom_score_adj %q, want %d", out, up)
	}
	// Lowering without CAP_SYS_RESOURCE is clamped to the current value.
	if capEffective()&(1<<unix.CAP_SYS_RESOURCE) == 0 && curV > -1000 {
		b := sh(t, "cat /proc/self/oom_score_adj")
		down := -1000
		b.Spec.Process.OOMScoreAdj = &down
		out, es := run(t, b)
		if es.Code != 0 || strings.TrimSpace(out) != strconv.Itoa(curV) {
			t.Errorf("clamped oom_score_adj %q (exit %d), want %d", out, es.Code, curV)
		}
	}
}

func TestMemoryLimitOOMKill(t *testing.T) {
	needRoot(t)
	b := sh(t, "dd if=/dev/zero of=/dev/null bs=128M count=1; echo rc=$?")
	lim := int64(32 << 20)
	b.Spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &lim, Swap: &lim}
	out, es := run(t, b)
	if !strings.Contains(out, "rc=137\n") {
		t.Fatalf("process allocating 128M under a 32M limit was not OOM-killed: %+v %s", es, out)
	}
}

// TestCgroupLimitsApplied: the limits are in the container's cgroup, which
// it sees at /sys/fs/cgroup: in a cgroup namespace, and without one (its
// directories bound there: Create makes the cgroup beside the rest, and
// the C init's plan must wait for it).
func TestCgroupLimitsApplied(t *testing.T) {
	needRoot(t)
	if cgroupV2() {
		t.Skip("needs a cgroup v1 host (checks v1 files; cgroup v2 limits are tested in TestCgroup2Paths)")
	}
	for _, cgroupNS := range []bool{true, false} {
		b := sh(t, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us")
		lim := int64(64 << 20)
		pids := int64(42)
		shares := uint64(512)
		quota := int64(50000)
		period := uint64(100000)
		b.Spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &lim}
		b.Spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
		b.Spec.Linux.Resources.CPU = &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period}
		if !cgroupNS {
			var ns []specs.LinuxNamespace
			for _, n := range b.Spec.Linux.Namespaces {
				if n.Type != specs.CgroupNamespace {
					ns = append(ns, n)
				}
			}
			b.Spec.Linux.Namespaces = ns
		}
		out, _ := run(t, b)
		if out != "67108864\n42\n512\n50000\n" {
			t.Fatalf("cgroup namespace %v: got %q", cgroupNS, out)
		}
	}
}

func cgroupV2() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

func TestCwdAndEnv(t *testing.T) {
	needRoot(t)
	b := sh(t, "pwd; echo $FOO; echo $HOME")
	b.Spec.Root.Readonly = false
	b.Spec.Process.Cwd = "/work/dir"
	b.Spec.Process.Env = append(b.Spec.Process.Env, "FOO=bar baz")
	out, _ := run(t, b)
	if out != "/work/dir\nbar baz\n/root\n" {
		t.Fatalf("got %q", out)
	}
}

func TestExitCodes(t *testing.T) {
	needRoot(t)
	for _, code := range []int{0, 1, 42, 255} {
		_, es := run(t, sh(t, "exit "+strconv.Itoa(code)))
		if es.Code != code || es.Signaled {
			t.Errorf("exit %d: got %+v", code, es)
		}
	}
}

func TestMissingBinaryIsTypedError(t *testing.T) {
	needRoot(t)
	b := testbundleNew(t, "/no/such/binary")
	x, err := create(t, b, libct.CreateOpts{})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("want not found, got %v (%s)", err, x.out.String())
	}
	if _, err := os.Stat(filepath.Join(x.root, x.id)); !os.IsNotExist(err) {
		t.Errorf("state dir left behind")
	}
}

func TestSignalsAndStatus(t *testing.T) {
	needRoot(t)
	b := sh(t, "trap 'exit 7' TERM; while true; do sleep 0.05; done")
	x, err := create(t, b, libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := x.c.State(); st.Status != libct.StatusCreated || st.Pid == 0 {
		t.Fatalf("state after create: %+v", st)
	}
	if err := x.c.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if st, _ := x.c.State(); st.Status != libct.StatusRunning {
		t.Fatalf("state after start: %+v", st)
	}
	if err := x.c.Start(ctx(t)); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second start: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	// Another process (here: another Load) signals it.
	other, err := libct.Load(x.root, x.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Signal(unix.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	es, err := x.c.Wait()
	if err != nil || es.Code != 7 {
		t.Fatalf("exit %+v %v", es, err)
	}
	if st, _ := other.State(); st.Status != libct.StatusStopped || st.Pid != 0 {
		t.Fatalf("state after exit: %+v", st)
	}
	if err := other.Signal(unix.SIGKILL, false); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("signal to stopped container: %v", err)
	}
	// SIGKILL reports 128+9.
	x2, _ := create(t, sh(t, "sleep 30"), libct.CreateOpts{})
	x2.c.Start(ctx(t))
	x2.c.Signal(unix.SIGKILL, false)
	if es, _ := x2.c.Wait(); !es.Signaled || es.Code != 137 {
		t.Errorf("SIGKILL: %+v", es)
	}
}

func TestPidReuseNotSignalled(t *testing.T) {
	needRoot(t)
	x, err := create(t, sh(t, "sleep 30"), libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := x.c.State()
	// Forge a state whose pid start time does not match.
	data, _ := os.ReadFile(filepath.Join(x.root, x.id, "state.json"))
	forged := strings.Replace(string(data), fmt.Sprintf(`"pidStartTime":%d`, st.PidStart), `"pidStartTime":1`, 1)
	os.WriteFile(filepath.Join(x.root, x.id, "state.json"), []byte(forged), 0o644)
	other, _ := libct.Load(x.root, x.id)
	if s, _ := other.State(); s.Status != libct.StatusStopped {
		t.Errorf("status with mismatched start time: %s", s.Status)
	}
	if err := other.Signal(unix.SIGKILL, false); err == nil {
		t.Errorf("signalled a pid whose start time does not match")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", st.Pid)); err != nil {
		t.Errorf("process was killed")
	}
}

func TestExec(t *testing.T) {
	needRoot(t)
	b := sh(t, "sleep 30")
	b.Spec.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno}},
	}
	b.Spec.Root.Readonly = false
	x, err := create(t, b, libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.c.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	st, _ := x.c.State()
	other, _ := libct.Load(x.root, x.id)
	r, w, _ := os.Pipe()
	p := &specs.Process{
		Args: []string{"/bin/sh", "-c", "for n in pid net mnt uts ipc; do readlink /proc/self/ns/$n; done; id -u; hostname; mkdir /tmp/y 2>&1; pwd; echo $X; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; exit 3"},
		Env:  []string{"PATH=/bin", "X=exec-env"}, Cwd: "/tmp",
		User:            specs.User{UID: 1000, GID: 1000},
		NoNewPrivileges: true,
	}
	proc, err := other.Exec(ctx(t), p, libct.ExecOpts{Stdout: w, Stderr: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	es, err := proc.Wait()
	buf := make([]byte, 4096)
	n, _ := r.Read(buf)
	out := string(buf[:n])
	if err != nil || es.Code != 3 {
		t.Fatalf("exec exit %+v %v: %s", es, err, out)
	}
	lines := strings.Split(out, "\n")
	for i, ns := range []string{"pid", "net", "mnt", "uts", "ipc"} {
		want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", st.Pid, ns))
		if lines[i] != want {
			t.Errorf("exec %s ns %s, want %s", ns, lines[i], want)
		}
	}
	if lines[5] != "1000" || lines[6] != "shim" || !strings.Contains(lines[7], "Operation not permitted") ||
		lines[8] != "/tmp" || lines[9] != "exec-env" || field(out, "CapEff") != "0000000000000000" || field(out, "NoNewPrivs") != "1" {
		t.Errorf("exec output:\n%s", out)
	}
	pids, _ := x.c.Processes()
	if len(pids) != 1 || pids[0] != st.Pid {
		t.Errorf("processes after exec exited: %v (init %d)", pids, st.Pid)
	}
	// A missing binary is a typed error.
	_, err = other.Exec(ctx(t), &specs.Process{Args: []string{"/nope"}, Cwd: "/"}, libct.ExecOpts{})
	if !errdefs.IsNotFound(err) {
		t.Errorf("exec of a missing binary: %v", err)
	}
}

func TestTerminal(t *testing.T) {
	needRoot(t)
	b := sh(t, "tty; stty size")
	b.Spec.Process.Terminal = true
	x, err := create(t, b, libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if x.c.Console == nil {
		t.Fatal("no console returned")
	}
	unix.IoctlSetWinsize(int(x.c.Console.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 111})
	x.c.Start(ctx(t))
	buf := make([]byte, 0, 256)
	tmp := make([]byte, 256)
	for {
		n, err := x.c.Console.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			break
		}
	}
	x.c.Wait()
	out := strings.ReplaceAll(string(buf), "\r", "")
	if !strings.HasPrefix(out, "/dev/pts/0\n") || !strings.Contains(out, "33 111") {
		t.Fatalf("got %q", out)
	}
}

func TestPauseResume(t *testing.T) {
	needRoot(t)
	x, err := create(t, sh(t, "sleep 30"), libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	x.c.Start(ctx(t))
	if err := x.c.Pause(); err != nil {
		t.Fatal(err)
	}
	st, _ := x.c.State()
	if st.Status != libct.StatusPaused {
		t.Fatalf("status %s", st.Status)
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.Pid))
	_ = stat
	if err := x.c.Resume(); err != nil {
		t.Fatal(err)
	}
	if st, _ := x.c.State(); st.Status != libct.StatusRunning {
		t.Fatalf("status after resume %s", st.Status)
	}
	if err := x.c.Resume(); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("resume of a running container: %v", err)
	}
}

func TestUpdateAndStats(t *testing.T) {
	needRoot(t)
	x, err := create(t, sh(t, "sleep 30"), libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	x.c.Start(ctx(t))
	lim := int64(48 << 20)
	if err := x.c.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &lim}}); err != nil {
		t.Fatal(err)
	}
	s, err := x.c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Memory.Limit != uint64(lim) || s.Pids.Current != 1 {
		t.Errorf("stats after update: limit %d pids %d", s.Memory.Limit, s.Pids.Current)
	}
	bad := int64(-5)
	if err := x.c.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &bad}}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("update with a negative limit: %v", err)
	}
	// Device rules: the spec's own are kept (containerd's runc shim sends
	// the resources whole), others are refused; none, or an empty list,
	// leave them alone.
	same := *x.c.Spec().Linux.Resources
	same.Memory = &specs.LinuxMemory{Limit: &lim}
	if err := x.c.Update(&same); err != nil {
		t.Errorf("update with the spec's device rules: %v", err)
	}
	other := specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}
	if err := x.c.Update(&other); !errdefs.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("update allowing every device: %v", err)
	}
	if err := x.c.Update(&specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{}}); err != nil {
		t.Errorf("update with no device rules: %v", err)
	}
	if !cgroupV2() {
		st, _ := x.c.State()
		b, err := os.ReadFile("/sys/fs/cgroup/devices" + st.CgroupPath + "/devices.list")
		if list := string(b); err != nil || strings.Contains(list, "a *:* rwm") || !strings.Contains(list, "c 1:3 rwm") {
			t.Errorf("devices after the updates: %q %v", list, err)
		}
	}
}

func TestDeleteKillsEverything(t *testing.T) {
	needRoot(t)
	b := sh(t, "sleep 100 & sleep 100 & sleep 100")
	x, err := create(t, b, libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	x.c.Start(ctx(t))
	st, _ := x.c.State()
	var pids []int
	for i := 0; i < 100 && len(pids) < 3; i++ {
		time.Sleep(20 * time.Millisecond)
		pids, _ = x.c.Processes()
	}
	if len(pids) < 3 {
		t.Fatalf("processes: %v", pids)
	}
	if err := x.c.Delete(ctx(t), false); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("delete of a running container without force: %v", err)
	}
	go x.c.Wait()
	if err := x.c.Delete(ctx(t), true); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", p)); err == nil {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if !strings.Contains(string(b), ") Z ") {
				t.Errorf("pid %d still alive after delete", p)
			}
		}
	}
	if !cgroupGone(st.CgroupPath) {
		t.Errorf("cgroup %s left behind", st.CgroupPath)
	}
	if _, err := os.Stat(filepath.Join(x.root, x.id)); !os.IsNotExist(err) {
		t.Errorf("state dir left behind")
	}
	if _, err := libct.Load(x.root, x.id); !errdefs.IsNotFound(err) {
		t.Errorf("load after delete: %v", err)
	}
}

func TestCreateTwiceIsAlreadyExists(t *testing.T) {
	needRoot(t)
	b := sh(t, "true")
	root := t.TempDir()
	c, err := libct.Create(ctx(t), root, "dup", b.Spec, b.Dir, libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Delete(context.Background(), true)
	if _, err := libct.Create(ctx(t), root, "dup", b.Spec, b.Dir, libct.CreateOpts{}); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second create: %v", err)
	}
	ids, _ := libct.List(root)
	if len(ids) != 1 || ids[0] != "dup" {
		t.Errorf("list: %v", ids)
	}
}

func TestInitBinaryIsSealed(t *testing.T) {
	needRoot(t)
	x, err := create(t, sh(t, "true"), libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := x.c.State()
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/exe", st.Pid), os.O_WRONLY, 0)
	if err == nil {
		f.Close()
		t.Fatal("the init's executable can be opened for writing")
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.Pid))
	self, _ := os.Readlink("/proc/self/exe")
	if exe == self {
		t.Errorf("init runs the binary on the host path %s", exe)
	}
}

func TestFdsClosed(t *testing.T) {
	needRoot(t)
	b := sh(t, "ls /proc/self/fd | sort -n | tr '\\n' ' '")
	// A leaked host fd would be visible here.
	leak, _ := os.Open("/etc/hostname")
	defer leak.Close()
	out, _ := run(t, b)
	if strings.TrimSpace(out) != "0 1 2 3" { // 3 is ls's own directory fd
		t.Fatalf("fds in the container: %q", out)
	}
}

func TestPreservedFds(t *testing.T) {
	needRoot(t)
	r, w, _ := os.Pipe()
	defer r.Close()
	b := sh(t, "echo via-fd3 >&3")
	x, err := create(t, b, libct.CreateOpts{ExtraFiles: []*os.File{w}})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	x.c.Start(ctx(t))
	x.c.Wait()
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if string(buf[:n]) != "via-fd3\n" {
		t.Fatalf("got %q", buf[:n])
	}
}

func TestUserNamespace(t *testing.T) {
	needRoot(t)
	b := sh(t, "cat /proc/self/uid_map /proc/self/gid_map; id -u; ls /dev/null")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	b.Spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	b.Spec.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	out, es := run(t, b)
	f := strings.Fields(out)
	if es.Code != 0 || len(f) < 8 || f[0] != "0" || f[1] != "100000" || f[2] != "65536" || f[6] != "0" || f[7] != "/dev/null" {
		t.Fatalf("exit %d: %q", es.Code, out)
	}
}

func TestHooks(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	b := sh(t, "echo running")
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(dir, name)}}
	}
	b.Spec.Hooks = &specs.Hooks{
		CreateRuntime: []specs.Hook{hook("createRuntime")},
		Poststart:     []specs.Hook{hook("poststart")},
	}
	out, _ := run(t, b)
	if out != "running\n" {
		t.Fatalf("output %q", out)
	}
	for _, n := range []string{"createRuntime", "poststart"} {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !strings.Contains(string(data), `"id":"`) {
			t.Errorf("hook %s: state %q %v", n, data, err)
		}
	}
	// A failing createRuntime hook fails create and leaves nothing.
	b2 := sh(t, "true")
	b2.Spec.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/false"}}}
	x, err := create(t, b2, libct.CreateOpts{})
	if err == nil {
		t.Fatal("create with a failing hook succeeded")
	}
	if _, err := os.Stat(filepath.Join(x.root, x.id)); !os.IsNotExist(err) {
		t.Errorf("state left behind")
	}
}

func TestLowAddressSpaceLimit(t *testing.T) {
	needRoot(t)
	// The Go init must survive an RLIMIT_AS far below what a Go process
	// reserves, and the process must get exactly the limit.
	b := sh(t, "ulimit -v; ulimit -d")
	b.Spec.Process.Rlimits = []specs.POSIXRlimit{
		{Type: "RLIMIT_AS", Soft: 64 << 20, Hard: 64 << 20},
		{Type: "RLIMIT_DATA", Soft: 32 << 20, Hard: 32 << 20},
	}
	out, es := run(t, b)
	if es.Code != 0 || out != "65536\n32768\n" {
		t.Fatalf("exit %d: %q", es.Code, out)
	}
}

func TestCapabilitiesTheRuntimeLacks(t *testing.T) {
	needRoot(t)
	if capEffective()&(1<<unix.CAP_SYS_RESOURCE) != 0 {
		t.Skip("needs a host where this process lacks CAP_SYS_RESOURCE (this one holds it)")
	}
	b := sh(t, "grep ^CapPrm: /proc/self/status")
	caps := []string{"CAP_KILL", "CAP_SYS_RESOURCE"}
	b.Spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	out, es := run(t, b)
	got, _ := strconv.ParseUint(field(out, "CapPrm"), 16, 64)
	if es.Code != 0 || got != capMask("CAP_KILL") {
		t.Fatalf("exit %d: %q", es.Code, out)
	}
}

func TestNoMountNamespace(t *testing.T) {
	needRoot(t)
	// Without a mount namespace nothing is mounted on the host; the
	// process is chrooted into the rootfs.
	b := sh(t, "cat /etc/passwd | head -1")
	var ns []specs.LinuxNamespace
	for _, n := range b.Spec.Linux.Namespaces {
		if n.Type != specs.MountNamespace && n.Type != specs.CgroupNamespace {
			ns = append(ns, n)
		}
	}
	b.Spec.Linux.Namespaces = ns
	b.Spec.Linux.MaskedPaths, b.Spec.Linux.ReadonlyPaths = nil, nil
	before := hostMounts(t, b.Dir)
	out, es := run(t, b)
	after := hostMounts(t, b.Dir)
	if es.Code != 0 || out != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Fatalf("exit %d: %q", es.Code, out)
	}
	if string(before) != string(after) {
		t.Errorf("host mounts changed")
	}
}

func TestHostnameInJoinedUTSNamespace(t *testing.T) {
	needRoot(t)
	x1, err := create(t, sh(t, "sleep 30"), libct.CreateOpts{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := x1.c.State()
	b := sh(t, "hostname")
	for i, n := range b.Spec.Linux.Namespaces {
		if n.Type == specs.UTSNamespace {
			b.Spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/uts", st.Pid)
		}
	}
	b.Spec.Hostname = "joined"
	if out, _ := run(t, b); out != "joined\n" {
		t.Fatalf("got %q", out)
	}
}

func TestNoPivot(t *testing.T) {
	needRoot(t)
	b := sh(t, "cat /etc/passwd | head -1; ls /proc/self/root/ | grep -c .")
	x, err := create(t, b, libct.CreateOpts{NoPivot: true})
	if err != nil {
		t.Fatal(err)
	}
	x.c.Start(ctx(t))
	x.c.Wait()
	<-x.done
	if !strings.HasPrefix(x.out.String(), "root:x:0:0:root:/root:/bin/sh\n") {
		t.Fatalf("got %q", x.out.String())
	}
}

// TestNoPivotExec: a process exec'd into a no-pivot container runs in the
// container's rootfs (it used to fail: it chrooted through a host pid
// looked up in the container's /proc).
func TestNoPivotExec(t *testing.T) {
	needRoot(t)
	b := sh(t, "sleep 30")
	if err := os.WriteFile(filepath.Join(b.Rootfs, "marker"), []byte("in the rootfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	x, err := create(t, b, libct.CreateOpts{NoPivot: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.c.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	p := &specs.Process{Args: []string{"/bin/cat", "/marker"}, Env: []string{"PATH=/bin"}, Cwd: "/"}
	proc, err := x.c.Exec(ctx(t), p, libct.ExecOpts{Stdout: w, Stderr: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	es, err := proc.Wait()
	out, _ := io.ReadAll(r)
	if err != nil || es.Code != 0 || string(out) != "in the rootfs" {
		t.Fatalf("exec exit %+v %v: %q", es, err, out)
	}
}

func TestTimeNamespaceOffsets(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/proc/self/ns/time"); err != nil {
		t.Skip("needs a kernel with time namespaces (5.6+)")
	}
	b := sh(t, "cut -d. -f1 /proc/uptime")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
	b.Spec.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"boottime": {Secs: 86400 * 365}}
	out, es := run(t, b)
	up, err := strconv.Atoi(strings.TrimSpace(out))
	if es.Code != 0 || err != nil || up < 86400*365 {
		t.Fatalf("uptime in the container %q (exit %d)", out, es.Code)
	}
}

// TestLSMRefusedByCreate: on a host without AppArmor and SELinux a
// container that demands a profile, a process label or a mount label is
// not created (FailedPrecondition), and nothing of it is left.
func TestLSMRefusedByCreate(t *testing.T) {
	needRoot(t)
	if lsm := libct.HostLSM(); lsm.AppArmor || lsm.SELinux {
		t.Skipf("needs a host without AppArmor and SELinux (this one: %+v); the fake-tree tests cover the rest", lsm)
	}
	for name, set := range map[string]func(s *specs.Spec){
		"apparmor profile": func(s *specs.Spec) { s.Process.ApparmorProfile = "shim-test" },
		"process label":    func(s *specs.Spec) { s.Process.SelinuxLabel = "system_u:system_r:container_t:s0" },
		"mount label":      func(s *specs.Spec) { s.Linux.MountLabel = "system_u:object_r:container_file_t:s0" },
	} {
		t.Run(name, func(t *testing.T) {
			b := sh(t, "true")
			set(b.Spec)
			x, err := create(t, b, libct.CreateOpts{})
			if !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("got %v, want FailedPrecondition", err)
			}
			if _, err := libct.Load(x.root, x.id); err == nil {
				t.Fatal("a refused container has state")
			}
		})
	}
}

// TestExecRacesExit execs into a container from several goroutines while
// its init is killed: an exec the kernel kills with the PID namespace
// fails with FailedPrecondition, never an untyped pipe error (kubelet's
// exec probes race container exits all the time).
func TestExecRacesExit(t *testing.T) {
	needRoot(t)
	for round := 0; round < 5; round++ {
		x, err := create(t, sh(t, "sleep 30"), libct.CreateOpts{})
		if err != nil {
			t.Fatal(err)
		}
		if err := x.c.Start(ctx(t)); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 3)
		for g := 0; g < 3; g++ {
			c, err := libct.Load(x.root, x.id)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for {
					p, err := c.Exec(ctx(t), &specs.Process{Args: []string{"/bin/true"}, Cwd: "/", Env: []string{"PATH=/bin"}}, libct.ExecOpts{})
					if err != nil {
						errs <- err
						return
					}
					p.Wait()
				}
			}()
		}
		time.Sleep(time.Duration(50+round*40) * time.Millisecond)
		if err := x.c.Signal(unix.SIGKILL, false); err != nil {
			t.Fatal(err)
		}
		for g := 0; g < 3; g++ {
			if err := <-errs; !errdefs.IsFailedPrecondition(err) {
				t.Errorf("round %d: exec while the container died: %v", round, err)
			}
		}
		x.c.Wait()
	}
}
