package cgstats

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A fake unified hierarchy with the files a v2 kernel writes.
func TestV2FakeTree(t *testing.T) {
	root := t.TempDir()
	c := "kubepods/pod1/ctr"
	writeTree(t, root, map[string]string{
		c + "/cgroup.procs": "12\n13\n14\n",
		c + "/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n" +
			"nr_periods 10\nnr_throttled 3\nthrottled_usec 7000\n",
		c + "/memory.current": "104857600\n",
		c + "/memory.max":     "209715200\n",
		c + "/memory.stat": "anon 67108864\nfile 33554432\nkernel 1048576\nfile_mapped 4096\n" +
			"active_file 20971520\ninactive_file 12582912\npgfault 1000\npgmajfault 7\n",
		c + "/memory.swap.current": "8192\n",
		c + "/memory.swap.max":     "max\n",
		c + "/memory.peak":         "157286400\n",
		c + "/memory.events":       "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
		c + "/memory.low":          "0\n",
		c + "/pids.current":        "9\n",
		c + "/pids.max":            "max\n",
		c + "/cpu.pressure":        "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=789\n",
		c + "/memory.pressure":     "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
		c + "/io.pressure":         "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		c + "/io.stat":             "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
		c + "/cpu.max":             "20000 100000\n",
		c + "/cpu.weight":          "39\n",
	})
	r := NewV2(root)
	s, err := r.Read("/"+c, All)
	if err != nil {
		t.Fatal(err)
	}
	if got := *s.CPU; got != (CPUStats{UsageNs: 2.5e9, UserNs: 2e9, SystemNs: 5e8, Periods: 10, ThrottledPeriods: 3, ThrottledNs: 7e6}) {
		t.Errorf("cpu %+v", got)
	}
	m := s.Memory
	if m.Usage != 100<<20 || m.WorkingSet != 100<<20-12<<20 || m.RSS != 64<<20 || m.Cache != 32<<20 || m.Limit != 200<<20 {
		t.Errorf("memory %+v", m)
	}
	if m.PgFault != 1000 || m.PgMajFault != 7 || m.MappedFile != 4096 || m.Kernel != 1<<20 || m.MaxUsage != 150<<20 || m.Failcnt != 5 || m.OOMKills != 1 {
		t.Errorf("memory detail %+v", m)
	}
	if !m.SwapKnown || m.Swap != 8192 || m.SwapLimit != 0 {
		t.Errorf("swap %+v", m)
	}
	if *s.Pids != (PidsStats{Procs: 3, Threads: 9}) {
		t.Errorf("pids %+v", s.Pids)
	}
	if s.PSI == nil || s.PSI.CPU.Some.TotalUs != 123456 || s.PSI.CPU.Some.Avg10 != 1.5 || s.PSI.CPU.Full.TotalUs != 789 || s.PSI.Memory.Full.TotalUs != 5 || s.PSI.IO == nil {
		t.Errorf("psi %+v", s.PSI)
	}
	if len(s.IO.Devices) != 1 || s.IO.Devices[0] != (IODevice{Major: 8, ReadBytes: 4096, WriteBytes: 8192, Reads: 1, Writes: 2}) {
		t.Errorf("io %+v", s.IO)
	}
	if s.Spec.CPUQuota != 20000 || s.Spec.CPUPeriod != 100000 || s.Spec.MemoryLimit != 200<<20 || s.Spec.MemorySwapLimit != 0 {
		t.Errorf("spec %+v", s.Spec)
	}
	// cpu.weight 39 is what runc writes for 1024 shares.
	if s.Spec.CPUShares < 999 || s.Spec.CPUShares > 1024 {
		t.Errorf("shares from weight 39: %d", s.Spec.CPUShares)
	}

	// Basic reads only what the CRI stats carry.
	b, err := r.Read(c, Basic)
	if err != nil {
		t.Fatal(err)
	}
	if b.Pids != nil || b.IO != nil || b.Spec != nil || b.Memory.MaxUsage != 0 || b.CPU.UsageNs != 2.5e9 {
		t.Errorf("basic read too much or too little: %+v", b)
	}

	// A controller that is not enabled leaves its section out.
	os.Remove(filepath.Join(root, c, "memory.current"))
	if s, err := r.Read(c, Basic); err != nil || s.Memory != nil || s.CPU == nil {
		t.Errorf("without memory files: %+v, %v", s, err)
	}
	// A cgroup that is gone is NotFound.
	if _, err := r.Read("/kubepods/pod1/gone", Basic); !errdefs.IsNotFound(err) {
		t.Errorf("missing cgroup: %v", err)
	}
	// A limited swap.
	writeTree(t, root, map[string]string{c + "/memory.current": "1\n", c + "/memory.swap.max": "1048576\n"})
	if s, err := r.Read(c, Memory); err != nil || s.Memory.SwapLimit != 1<<20 {
		t.Errorf("swap limit: %+v, %v", s, err)
	}
	// Garbage is an error, not a zero.
	writeTree(t, root, map[string]string{c + "/memory.current": "lots\n"})
	if _, err := r.Read(c, Memory); err == nil || errdefs.IsNotFound(err) {
		t.Errorf("garbage memory.current: %v", err)
	}
}

// A fake v1 layout: one directory per controller.
func TestV1FakeTree(t *testing.T) {
	base := t.TempDir()
	dirs := map[string]string{}
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "blkio"} {
		dirs[c] = filepath.Join(base, c)
	}
	c := "/shim/ctr"
	files := map[string]string{
		"cpuacct" + c + "/cpuacct.usage":        "3000000000\n",
		"cpuacct" + c + "/cpuacct.usage_user":   "2000000000\n",
		"cpuacct" + c + "/cpuacct.usage_sys":    "1000000000\n",
		"cpu" + c + "/cpu.stat":                 "nr_periods 4\nnr_throttled 1\nthrottled_time 5000\n",
		"cpu" + c + "/cpu.shares":               "1024\n",
		"cpu" + c + "/cpu.cfs_period_us":        "100000\n",
		"cpu" + c + "/cpu.cfs_quota_us":         "-1\n",
		"memory" + c + "/memory.usage_in_bytes": "73400320\n",
		"memory" + c + "/memory.limit_in_bytes": "9223372036854771712\n",
		"memory" + c + "/memory.stat": "cache 4096\nrss 1\npgfault 10\npgmajfault 1\n" +
			"total_cache 8388608\ntotal_rss 67108864\ntotal_mapped_file 8192\ntotal_inactive_file 4194304\n" +
			"total_pgfault 20\ntotal_pgmajfault 2\ntotal_swap 0\n",
		"memory" + c + "/memory.memsw.limit_in_bytes":    "9223372036854771712\n",
		"memory" + c + "/memory.max_usage_in_bytes":      "80000000\n",
		"memory" + c + "/memory.failcnt":                 "0\n",
		"memory" + c + "/memory.oom_control":             "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		"memory" + c + "/memory.soft_limit_in_bytes":     "9223372036854771712\n",
		"memory" + c + "/cgroup.procs":                   "1\n",
		"pids" + c + "/cgroup.procs":                     "100\n101\n",
		"pids" + c + "/pids.current":                     "5\n",
		"pids" + c + "/pids.max":                         "max\n",
		"blkio" + c + "/blkio.throttle.io_service_bytes": "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
		"blkio" + c + "/blkio.throttle.io_serviced":      "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
	}
	writeTree(t, base, files)
	r := NewV1(dirs)
	s, err := r.Read(c, All)
	if err != nil {
		t.Fatal(err)
	}
	if *s.CPU != (CPUStats{UsageNs: 3e9, UserNs: 2e9, SystemNs: 1e9, Periods: 4, ThrottledPeriods: 1, ThrottledNs: 5000}) {
		t.Errorf("cpu %+v", s.CPU)
	}
	m := s.Memory
	if m.Usage != 70<<20 || m.WorkingSet != 66<<20 || m.RSS != 64<<20 || m.Cache != 8<<20 || m.Limit != 0 {
		t.Errorf("memory %+v", m)
	}
	if m.PgFault != 20 || m.OwnPgFault != 10 || m.PgMajFault != 2 || m.OOMKills != 2 || m.MaxUsage != 80000000 || !m.SwapKnown {
		t.Errorf("memory detail %+v", m)
	}
	if *s.Pids != (PidsStats{Procs: 2, Threads: 5}) {
		t.Errorf("pids %+v (procs come from the pids hierarchy)", s.Pids)
	}
	if len(s.IO.Devices) != 1 || s.IO.Devices[0] != (IODevice{Major: 8, ReadBytes: 4096, WriteBytes: 8192, Reads: 1, Writes: 2}) {
		t.Errorf("io %+v", s.IO)
	}
	if *s.Spec != (Spec{CPUShares: 1024, CPUPeriod: 100000, CPUQuota: -1}) {
		t.Errorf("spec %+v", s.Spec)
	}
	if _, err := r.Read("/shim/gone", Basic); !errdefs.IsNotFound(err) {
		t.Errorf("missing cgroup: %v", err)
	}
	// A limit with swap accounting: the swap limit is memsw - memory.
	writeTree(t, base, map[string]string{
		"memory" + c + "/memory.limit_in_bytes":       "67108864\n",
		"memory" + c + "/memory.memsw.limit_in_bytes": "100663296\n",
	})
	if s, err := r.Read(c, Memory); err != nil || s.Memory.Limit != 64<<20 || s.Memory.SwapLimit != 32<<20 {
		t.Errorf("limits: %+v, %v", s.Memory, err)
	}
}

func TestParsers(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "18446744073709551615": 1<<64 - 1, "42": 42} {
		if v, err := parseUint([]byte(in)); err != nil || v != want {
			t.Errorf("parseUint(%q) = %d, %v", in, v, err)
		}
	}
	for _, in := range []string{"", "-1", "1.5", "18446744073709551616", "12a"} {
		if _, err := parseUint([]byte(in)); err == nil {
			t.Errorf("parseUint(%q) accepted", in)
		}
	}
	if _, err := parsePressure([]byte("garbage\n")); err == nil {
		t.Error("parsePressure accepted garbage")
	}
	if _, err := parsePressure([]byte("some avg10=x avg60=0 avg300=0 total=1\n")); err == nil {
		t.Error("parsePressure accepted a bad average")
	}
	var got []string
	eachKV([]byte("a 1\nb two\n\nc 3"), func(k []byte, v uint64) { got = append(got, string(k)+"="+strconv.FormatUint(v, 10)) })
	if strings.Join(got, ",") != "a=1,c=3" {
		t.Errorf("eachKV: %v", got)
	}
}

// The host's own cgroups, read against what the kernel says: a cgroup
// made for the test, a busy child moved into it, its CPU time compared
// with the child's own.
func TestHostCgroup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (creates a cgroup)")
	}
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	name := "/shim-cgstats-test-" + strconv.Itoa(os.Getpid())
	var dirs []string
	if r.Version() == 2 {
		dirs = []string{"/sys/fs/cgroup" + name}
	} else {
		v1 := r.(*V1)
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "blkio"} {
			if d := v1.dirs[c]; d != "" {
				dirs = append(dirs, d+name)
			}
		}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Skipf("needs a host where this process may create cgroups: %v", err)
		}
	}
	// The child waits until it is in the cgroup, spins, says so, waits.
	cmd := exec.Command("sh", "-c", "read x; i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo done; read y")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
		for _, d := range dirs {
			for i := 0; i < 50 && os.Remove(d) != nil; i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
	for _, d := range dirs {
		if err := os.WriteFile(d+"/cgroup.procs", []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	before, err := r.Read(name, CPU)
	if err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	buf := make([]byte, 16)
	if n, err := stdout.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "done") {
		t.Fatalf("child: %q, %v", buf[:n], err)
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	s, err := r.Read(name, All)
	if err != nil {
		t.Fatal(err)
	}
	ticks := (utime + stime) * 10_000_000
	spent := s.CPU.UsageNs - before.CPU.UsageNs
	// The cgroup's CPU time is the child's: it ran only there since the
	// move. The process's own figure is in 10 ms ticks.
	if spent+30_000_000 < ticks || spent > ticks+30_000_000+ticks/10 || spent < 50_000_000 {
		t.Errorf("cgroup cpu %d ns while the child spun, child's own %d ns", spent, ticks)
	}
	if s.Memory == nil || s.Memory.Usage == 0 || s.Memory.WorkingSet > s.Memory.Usage {
		t.Errorf("memory %+v", s.Memory)
	}
	if s.Pids == nil || s.Pids.Procs != 1 {
		t.Errorf("procs %+v", s.Pids)
	}
	t.Logf("host cgroup v%d (unified %v): cpu %+v memory %+v pids %+v", r.Version(), cgroups.IsCgroup2UnifiedMode(), s.CPU, s.Memory, s.Pids)
}

func BenchmarkRead(b *testing.B) {
	r, err := New()
	if err != nil {
		b.Skip(err)
	}
	self := os.Getenv("CGSTATS_BENCH_CGROUP") // default: the root cgroup, in every hierarchy
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Read(self, Basic); err != nil {
			b.Fatal(err)
		}
	}
}
