package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestParseStatPPID(t *testing.T) {
	tests := []struct {
		stat    string
		want    int
		wantErr bool
	}{
		{"42 (sleep) S 7 42 42 0 -1", 7, false},
		// A command name may hold spaces and parentheses.
		{"42 (a) b (c) R 1234 42 42 0", 1234, false},
		{"42 (x)", 0, true},
		{"42 sleep S 7", 0, true},
		{"42 (x) S notanumber", 0, true},
	}
	for _, tc := range tests {
		got, err := parseStatPPID([]byte(tc.stat))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseStatPPID(%q) = %d, %v; want %d, error %v", tc.stat, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestExeName(t *testing.T) {
	for exe, want := range map[string]string{
		"/usr/bin/containerd-shim-runc-v2": "containerd-shim-runc-v2",
		"/pause":                           "pause",
		"/memfd:shim":                      "shim",
		"/tmp/x/shim":                      "shim",
	} {
		if got := exeName(exe); got != want {
			t.Errorf("exeName(%q) = %q, want %q", exe, got, want)
		}
	}
}

func TestProcSelector(t *testing.T) {
	const sock = "/tmp/peer/containerd/containerd.sock"
	procs := []proc{
		{PID: 1, PPID: 0, Exe: "/sbin/init"},
		{PID: 10, PPID: 1, Exe: "/usr/bin/containerd", Cmdline: "/usr/bin/containerd --config /tmp/peer/config.toml"},
		// Our runtime's shims: their command line names our socket.
		{PID: 20, PPID: 1, Exe: "/usr/bin/containerd-shim-runc-v2", Cmdline: "containerd-shim-runc-v2 -namespace k8s.io -id a -address " + sock},
		{PID: 21, PPID: 20, Exe: "/pause", Cmdline: "/pause"},
		{PID: 22, PPID: 20, Exe: "/bin/busybox", Cmdline: "sleep 3600"}, // a container: never counted
		{PID: 23, PPID: 22, Exe: "/pause", Cmdline: "/pause"},           // under a container: not ours
		// Someone else's containerd and its pods.
		{PID: 30, PPID: 1, Exe: "/usr/bin/containerd-shim-runc-v2", Cmdline: "containerd-shim-runc-v2 -address /run/containerd/containerd.sock"},
		{PID: 31, PPID: 30, Exe: "/pause", Cmdline: "/pause"},
		// shim: daemon, monitors by path and as a sealed memfd copy.
		{PID: 40, PPID: 1, Exe: "/tmp/b/shim", Cmdline: "/tmp/b/shim serve --state /tmp/b/state"},
		{PID: 41, PPID: 1, Exe: "/tmp/b/shim", Cmdline: "shim monitor"},
		{PID: 42, PPID: 1, Exe: "/memfd:shim", Cmdline: "shim monitor --state /tmp/b/state/pods/x"},
		{PID: 43, PPID: 1, Exe: "/work/main/bin/shim", Cmdline: "shim monitor --state /run/shim"},
		{PID: 50, PPID: 2, Exe: ""}, // kernel thread
	}
	tests := []struct {
		name string
		sel  procSelector
		want map[int]string
	}{
		{"containerd scoped by socket, pause children",
			procSelector{Names: []string{"containerd-shim-runc-v2", "pause"}, Match: sock, Exclude: map[int]bool{10: true}},
			map[int]string{20: "containerd-shim-runc-v2", 21: "pause"}},
		{"containerd unscoped",
			procSelector{Names: []string{"containerd-shim-runc-v2", "pause"}},
			map[int]string{20: "containerd-shim-runc-v2", 21: "pause", 23: "pause", 30: "containerd-shim-runc-v2", 31: "pause"}},
		{"shim by path and memfd, daemon excluded",
			procSelector{Names: []string{"/tmp/b/shim", "shim"}, Match: "/tmp/b", Exclude: map[int]bool{40: true}},
			map[int]string{41: "/tmp/b/shim", 42: "shim"}},
		{"no names, nothing",
			procSelector{Match: sock},
			map[int]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.sel.Select(procs)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Select = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadRollupFake(t *testing.T) {
	root := t.TempDir()
	write := func(pid int, text string) {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "smaps_rollup"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1, "00400000-7ffd [rollup]\nRss:                1234 kB\nPss:                 567 kB\nPss_Anon:  100 kB\n")
	write(2, "Rss: 10 kB\n")
	write(3, "Rss: x kB\nPss: 1 kB\n")
	if m, err := readRollup(root, 1); err != nil || m != (memUsage{RSS: 1234, PSS: 567}) {
		t.Errorf("readRollup(1) = %+v, %v", m, err)
	}
	for _, pid := range []int{2, 3, 4} {
		if m, err := readRollup(root, pid); err == nil {
			t.Errorf("readRollup(%d) = %+v, want an error", pid, m)
		}
	}
	// A selected process that is gone is left out, not an error.
	g, err := measureGroup(root, map[int]string{1: "a", 4: "a"})
	if err != nil || g.Procs != 1 || g.Total != (memUsage{RSS: 1234, PSS: 567}) || g.Counts["a"] != 1 {
		t.Errorf("measureGroup = %+v, %v", g, err)
	}
}

// TestMeasureRealProcesses selects real processes from /proc by executable
// path, with a child, and reads their memory from the kernel.
func TestMeasureRealProcesses(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	dir := t.TempDir()
	runtime := filepath.Join(dir, "fake-runtime")
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(runtime, data, 0o755); err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for range 2 {
		c := exec.Command(runtime, "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	t.Cleanup(func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	})
	// Wait until both have exec'd (their exe is the copy).
	var sel map[int]string
	s := procSelector{Names: []string{runtime}, Exclude: map[int]bool{cmds[1].Process.Pid: true}}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		procs, err := listProcs("/proc")
		if err != nil {
			t.Fatal(err)
		}
		sel = s.Select(procs)
		for _, p := range procs {
			if p.PID == cmds[0].Process.Pid && p.PPID != os.Getpid() {
				t.Fatalf("ppid of %d = %d, want %d", p.PID, p.PPID, os.Getpid())
			}
		}
		if len(sel) == 1 {
			break
		}
	}
	if want := map[int]string{cmds[0].Process.Pid: runtime}; !reflect.DeepEqual(sel, want) {
		t.Fatalf("Select = %v, want %v (the excluded one left out)", sel, want)
	}
	g, err := measureGroup("/proc", sel)
	if err != nil {
		t.Fatal(err)
	}
	if g.Procs != 1 || g.Total.RSS <= 0 || g.Total.PSS <= 0 || g.Total.PSS > g.Total.RSS {
		t.Errorf("measureGroup = %+v: want one process with 0 < PSS <= RSS", g)
	}
	self, err := readRollup("/proc", os.Getpid())
	if err != nil || self.RSS <= g.Total.RSS {
		t.Errorf("own rollup %+v, %v: want more RSS than a sleep's %d KiB", self, err, g.Total.RSS)
	}
}
