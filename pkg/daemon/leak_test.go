package daemon

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// leakSnapshot is everything a pod cycle could leave behind.
type leakSnapshot struct {
	mounts     int
	pins       int
	veths      int
	nftRules   int
	cgroups    int
	stateFiles []string
	fds        int
	goroutines int
	monitors   int
}

func takeLeakSnapshot(t *testing.T, e *testEnv, d *daemonProc, table, vethPrefix string) leakSnapshot {
	t.Helper()
	var s leakSnapshot
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (strings.HasPrefix(f[4], e.state+"/") || strings.HasPrefix(f[4], e.root+"/")) &&
			f[4] != filepath.Join(e.state, "ns") {
			s.mounts++
		}
	}
	pins, _ := os.ReadDir(filepath.Join(e.state, "ns"))
	s.pins = len(pins)
	links, _ := netlink.LinkList()
	for _, l := range links {
		if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, vethPrefix) {
			s.veths++
		}
	}
	if conn, err := nftables.New(); err == nil {
		tables, _ := conn.ListTables()
		for _, tb := range tables {
			if tb.Name != table {
				continue
			}
			chains, _ := conn.ListChains()
			for _, c := range chains {
				if c.Table.Name == table {
					rules, _ := conn.GetRules(tb, c)
					s.nftRules += len(rules)
				}
			}
		}
		conn.CloseLasting()
	}
	for _, ctrl := range []string{"memory", "pids", "cpu"} {
		filepath.WalkDir(filepath.Join("/sys/fs/cgroup", ctrl, "shim"), func(p string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				s.cgroups++
			}
			return nil
		})
	}
	filepath.WalkDir(e.state, func(p string, de os.DirEntry, err error) error {
		if err == nil && p != e.state {
			s.stateFiles = append(s.stateFiles, strings.TrimPrefix(p, e.state))
		}
		return nil
	})
	sort.Strings(s.stateFiles)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	s.fds = len(fds)
	s.goroutines = adminMetric(t, e, "go_goroutines")
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline")); err == nil &&
			strings.Contains(string(cmd), "monitor") && strings.Contains(string(cmd), e.state) {
			s.monitors++
		}
	}
	return s
}

// adminMetric reads one gauge from the daemon's admin socket.
func adminMetric(t *testing.T, e *testEnv, name string) int {
	client := e.admin()
	resp, err := client.Get("http://shim/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int(f)
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestPodCyclesLeakNothing runs 200 pod create/start/stop/remove cycles
// and checks that no mount, pinned namespace, veth, nftables rule, cgroup,
// state file, fd, goroutine or monitor is left behind.
func TestPodCyclesLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: not run with -short")
	}
	e := newTestEnv(t, bridgeConfig("shimt3", "10.213.73.0/24")+"[image]\nsandbox_image = \"PAUSE\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	pause := reg.push(t, "test/pause:1", busyboxImage(t, []string{"sleep", "1000000"}, nil))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "PAUSE", pause, 1)), 0o600)
	d := e.start()
	d.pull(t, img)

	cycle := func(i int) {
		pc := podConfig(fmt.Sprintf("leak-%d", i), e.logs)
		if i%4 == 0 {
			// A shared pid namespace (an infra process) and a host port.
			pc.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
			pc.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 31080}}
		}
		pod := d.runPod(t, pc)
		c := d.create(t, pod, pc, ctrConfig("app", img, "sleep", "1000"))
		d.startCtr(t, c)
		if _, err := d.rs.StopContainer(bg, &runtimeapi.StopContainerRequest{ContainerId: c, Timeout: 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.rs.RemoveContainer(bg, &runtimeapi.RemoveContainerRequest{ContainerId: c}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.rs.StopPodSandbox(bg, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.rs.RemovePodSandbox(bg, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Fatal(err)
		}
	}
	// Warm up (lazily created things: the runtime binary, the bridge, the
	// table, the cgroup root), then measure.
	cycle(0)
	before := takeLeakSnapshot(t, e, d, "shimt3", "t3")
	for i := 1; i <= 200; i++ {
		cycle(i)
		if t.Failed() {
			return
		}
	}
	after := takeLeakSnapshot(t, e, d, "shimt3", "t3")
	if after.mounts != before.mounts || after.pins != 0 || after.veths != 0 || after.nftRules != before.nftRules ||
		after.cgroups != before.cgroups || after.monitors != 0 {
		t.Errorf("leaked: before %+v\nafter %+v", before, after)
	}
	if strings.Join(after.stateFiles, "\n") != strings.Join(before.stateFiles, "\n") {
		t.Errorf("state files differ:\nbefore %v\nafter  %v", before.stateFiles, after.stateFiles)
	}
	// A few fds and goroutines come and go (idle connections, timers);
	// a leak per cycle would be 200.
	if after.fds > before.fds+5 || after.goroutines > before.goroutines+10 {
		t.Errorf("fds %d -> %d, goroutines %d -> %d", before.fds, after.fds, before.goroutines, after.goroutines)
	}
	d.stop(t)
}
