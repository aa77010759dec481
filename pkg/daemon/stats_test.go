package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/nspin"
)

const mib = 1 << 20

// cgroupFile is a file of a container's or pod's cgroup: ctl is the v1
// controller; on a v2 host every file is in the one hierarchy.
func cgroupFile(ctl, cgroup, name string) string {
	if cgroups.IsCgroup2UnifiedMode() {
		return filepath.Join("/sys/fs/cgroup", cgroup, name)
	}
	return filepath.Join("/sys/fs/cgroup", ctl, cgroup, name)
}

func readCgroupInt(t *testing.T, ctl, cgroup, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(cgroupFile(ctl, cgroup, name))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cgroupPIDs lists a cgroup's processes, as the kernel has them.
func cgroupPIDs(t *testing.T, cgroup string) []int {
	t.Helper()
	b, err := os.ReadFile(cgroupFile("pids", cgroup, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// procCPU is a process's own CPU time (utime + stime) in nanoseconds.
func procCPU(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return (u + s) * 10_000_000 // USER_HZ
}

// procField reads "Name:  value kB" of /proc/<pid>/status.
func procField(pid int, name string) (string, int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	comm := ""
	var v int64
	for _, l := range strings.Split(string(b), "\n") {
		if c, ok := strings.CutPrefix(l, "Name:"); ok {
			comm = strings.TrimSpace(c)
		}
		if x, ok := strings.CutPrefix(l, name+":"); ok {
			f := strings.Fields(x)
			v, _ = strconv.ParseInt(f[0], 10, 64)
			v *= 1024
		}
	}
	return comm, v
}

func (d *daemonProc) ctrStats(t *testing.T, id string) *runtimeapi.ContainerStats {
	t.Helper()
	r, err := d.rs.ContainerStats(bg, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("container stats %s: %v", id, err)
	}
	return r.Stats
}

func (d *daemonProc) podStats(t *testing.T, id string) *runtimeapi.PodSandboxStats {
	t.Helper()
	r, err := d.rs.PodSandboxStats(bg, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: id})
	if err != nil {
		t.Fatalf("pod stats %s: %v", id, err)
	}
	return r.Stats
}

// waitStats polls a container's stats until ok, for at most 30 s.
func (d *daemonProc) waitStats(t *testing.T, id, what string, ok func(*runtimeapi.ContainerStats) bool) *runtimeapi.ContainerStats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := d.ctrStats(t, id)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: %s never seen; last stats %v", id, what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podNetNS is the pinned network namespace of a pod (verbose status).
func (d *daemonProc) podNetNS(t *testing.T, id string) (ns, ip string) {
	t.Helper()
	r, err := d.rs.PodSandboxStatus(bg, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		NetNS string `json:"netns"`
	}
	if err := json.Unmarshal([]byte(r.Info["info"]), &info); err != nil || info.NetNS == "" {
		t.Fatalf("pod %s verbose info %q: %v", id, r.Info["info"], err)
	}
	return info.NetNS, r.Status.Network.Ip
}

// sendOverPods sends n bytes from pod b to pod a over their interfaces:
// a listener made in a's network namespace, a connection made in b's.
func sendOverPods(t *testing.T, nsA, ipA, nsB string, n int) {
	t.Helper()
	var ln net.Listener
	if err := nspin.Do(nspin.Net, nsA, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(ipA, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	var conn net.Conn
	if err := nspin.Do(nspin.Net, nsB, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case k := <-got:
		if k != int64(n) {
			t.Fatalf("received %d bytes, sent %d", k, n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the transfer did not finish")
	}
}

// removeCgroupTree removes a test's cgroup parent (made by shim when the
// first container of a pod under it was created) from every hierarchy.
func removeCgroupTree(top string) {
	roots := []string{"/sys/fs/cgroup"}
	if !cgroups.IsCgroup2UnifiedMode() {
		roots, _ = filepath.Glob("/sys/fs/cgroup/*")
	}
	for _, r := range roots {
		var dirs []string
		filepath.WalkDir(filepath.Join(r, top), func(p string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			os.Remove(d)
		}
	}
}

// TestStatsAgainstKernel checks the stats numbers against what the kernel
// and the workloads say: a container holding 64 MiB, a busy loop, 10 MiB
// written to a root filesystem, 1 MiB sent between two pods; then pod
// stats, filters, the Stream* variants, the metrics (CRI and /metrics)
// and UpdatePodSandboxResources.
func TestStatsAgainstKernel(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimt8", "10.213.78.0/24")+"[stats]\ncontainer_metrics = true\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	top := fmt.Sprintf("/shim-stats-test-%d", os.Getpid())
	t.Cleanup(func() { removeCgroupTree(top) })
	d := e.start()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.removeAllPods(t)
		}
	})
	d.pull(t, img)

	// Pod A has its own cgroup (a cgroup_parent, as kubelet gives).
	parent := top + "/poda"
	pcA := podConfig("stats-a", e.logs)
	pcA.Linux.CgroupParent = parent
	podA := d.runPod(t, pcA)
	newCtr := func(pod string, pc *runtimeapi.PodSandboxConfig, name, script string) string {
		cfg := ctrConfig(name, img, "sh", "-c", script)
		cfg.Labels = map[string]string{"suite": "stats", "kind": name}
		cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 * mib}}
		id := d.create(t, pod, pc, cfg)
		d.startCtr(t, id)
		return id
	}
	// dd holds its 64 MiB block (touched by the read from /dev/zero)
	// while it waits to write it into a pipe nobody reads.
	memC := newCtr(podA, pcA, "mem", "dd if=/dev/zero bs=64M count=1 | sleep 100000")
	busyC := newCtr(podA, pcA, "busy", "while :; do :; done")
	diskC := newCtr(podA, pcA, "disk", "dd if=/dev/urandom of=/big bs=1M count=10 2>/dev/null && sync && touch /written && sleep 100000")
	cg := func(id string) string { return parent + "/" + id }

	t.Run("cpu", func(t *testing.T) {
		// The first sample of the container; the second at least a
		// second later is the rate over the two, which must be what
		// their counters say.
		pids := cgroupPIDs(t, cg(busyC))
		if len(pids) != 1 {
			t.Fatalf("busy container has processes %v", pids)
		}
		own1, w1 := procCPU(t, pids[0]), time.Now()
		s1 := d.ctrStats(t, busyC)
		time.Sleep(1500 * time.Millisecond)
		s2 := d.ctrStats(t, busyC)
		own2, w2 := procCPU(t, pids[0]), time.Now()
		u1, u2 := s1.Cpu.UsageCoreNanoSeconds.Value, s2.Cpu.UsageCoreNanoSeconds.Value
		dt := s2.Cpu.Timestamp - s1.Cpu.Timestamp
		rate := float64(u2-u1) / float64(dt) * 1e9
		nano := float64(s2.Cpu.UsageNanoCores.Value)
		procRate := float64(own2-own1) / w2.Sub(w1).Seconds()
		t.Logf("busy loop: %.0f nano cores (the process: %.0f); %d ns of CPU (the process: %d ns)", nano, procRate, u2, own2)
		if dt < int64(time.Second) || nano < rate*0.995-1e6 || nano > rate*1.005+1e6 {
			t.Errorf("usage_nano_cores %.0f, counters say %.0f over %d ns", nano, rate, dt)
		}
		// One spinning thread: about one core (less when the host is
		// busy: then what the kernel gave the process), never more.
		if nano < 0.3e9 || nano > 1.05e9 || nano < procRate*0.93-2e7 || nano > procRate*1.07+2e7 {
			t.Errorf("busy loop uses %.0f nano cores, its process %.0f, want about 1e9", nano, procRate)
		}
		// The cgroup's CPU time is the loop's (the kernel's per-process
		// figure is in 10 ms ticks).
		if diff := int64(own2) - int64(u2); diff < -50e6-int64(u2/50) || diff > 50e6+int64(u2/50) {
			t.Errorf("cgroup CPU %d ns, the process's own %d ns", u2, own2)
		}
	})

	t.Run("memory", func(t *testing.T) {
		s := d.waitStats(t, memC, "64 MiB working set", func(s *runtimeapi.ContainerStats) bool {
			return s.GetMemory().GetWorkingSetBytes().GetValue() >= 64*mib
		})
		m := s.Memory
		ws := m.WorkingSetBytes.Value
		if ws > 80*mib || m.RssBytes.Value < 64*mib || m.UsageBytes.Value < ws {
			t.Errorf("64 MiB held: working set %d, rss %d, usage %d", ws, m.RssBytes.Value, m.UsageBytes.Value)
		}
		if m.AvailableBytes == nil || m.AvailableBytes.Value != 256*mib-ws {
			t.Errorf("available %v with a 256 MiB limit and working set %d", m.AvailableBytes, ws)
		}
		if m.PageFaults.GetValue() < 64*mib/4096/2 {
			t.Errorf("%d page faults for 64 MiB touched", m.PageFaults.GetValue())
		}
		// The kernel's figure for the process holding the memory: its
		// anonymous pages are charged to the container (its file pages
		// may be charged to whoever read the binary first).
		var ddAnon int64
		for _, pid := range cgroupPIDs(t, cg(memC)) {
			if comm, anon := procField(pid, "RssAnon"); comm == "dd" {
				ddAnon = anon
			}
		}
		t.Logf("dd's RssAnon %d, working set %d", ddAnon, ws)
		if ddAnon < 64*mib || int64(ws) < ddAnon || int64(m.RssBytes.Value) < ddAnon {
			t.Errorf("dd's RssAnon %d, working set %d, rss %d", ddAnon, ws, m.RssBytes.Value)
		}
		if s.Swap == nil && !cgroups.IsCgroup2UnifiedMode() {
			if _, err := os.Stat(cgroupFile("memory", cg(memC), "memory.memsw.usage_in_bytes")); err == nil {
				t.Error("no swap stats on a host with swap accounting")
			}
		}
	})

	t.Run("writable layer", func(t *testing.T) {
		d.waitStats(t, diskC, "the write", func(*runtimeapi.ContainerStats) bool {
			r, err := d.rs.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: diskC, Cmd: []string{"test", "-e", "/written"}, Timeout: 10})
			return err == nil && r.ExitCode == 0
		})
		r, err := d.rs.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: diskC, Cmd: []string{"stat", "-c", "%b %B", "/big"}, Timeout: 10})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("stat /big: %v %s", err, r.GetStderr())
		}
		var blocks, bsize uint64
		fmt.Sscan(string(r.Stdout), &blocks, &bsize)
		alloc := blocks * bsize
		s := d.waitStats(t, diskC, "10 MiB in the writable layer", func(s *runtimeapi.ContainerStats) bool {
			return s.GetWritableLayer().GetUsedBytes().GetValue() >= alloc
		})
		used := s.WritableLayer.UsedBytes.Value
		if alloc < 10*mib || used > alloc+mib {
			t.Errorf("/big takes %d bytes on disk, the writable layer %d", alloc, used)
		}
		if s.WritableLayer.InodesUsed.GetValue() < 2 {
			t.Errorf("inodes used %d", s.WritableLayer.InodesUsed.GetValue())
		}
		fs, err := d.is.ImageFsInfo(bg, &runtimeapi.ImageFsInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if mp := fs.ImageFilesystems[0].FsId.Mountpoint; s.WritableLayer.FsId.GetMountpoint() != mp || fs.ContainerFilesystems[0].FsId.Mountpoint != mp {
			t.Errorf("writable layer on %q, image filesystem %q", s.WritableLayer.FsId.GetMountpoint(), mp)
		}
		if fs.ContainerFilesystems[0].UsedBytes.Value < used {
			t.Errorf("container filesystems use %d bytes, one writable layer %d", fs.ContainerFilesystems[0].UsedBytes.Value, used)
		}
	})

	// Pod B has no cgroup parent: it is the sum of its containers.
	pcB := podConfig("stats-b", e.logs)
	pcB.Labels = map[string]string{"pod": "b"}
	podB := d.runPod(t, pcB)
	sleepC := newCtr(podB, pcB, "sleep", "sleep 100000")

	t.Run("network", func(t *testing.T) {
		nsA, ipA := d.podNetNS(t, podA)
		nsB, _ := d.podNetNS(t, podB)
		a0, b0 := d.podStats(t, podA), d.podStats(t, podB)
		sendOverPods(t, nsA, ipA, nsB, mib)
		a1, b1 := d.podStats(t, podA), d.podStats(t, podB)
		rx := a1.Linux.Network.DefaultInterface.RxBytes.Value - a0.Linux.Network.DefaultInterface.RxBytes.Value
		tx := b1.Linux.Network.DefaultInterface.TxBytes.Value - b0.Linux.Network.DefaultInterface.TxBytes.Value
		t.Logf("1 MiB sent: pod a received %d bytes, pod b sent %d", rx, tx)
		// Payload plus TCP/IP and Ethernet headers (about 5%).
		for what, n := range map[string]uint64{"received": rx, "sent": tx} {
			if n < mib || n > mib+mib/8 {
				t.Errorf("%s %d bytes for 1 MiB of payload", what, n)
			}
		}
		n := a1.Linux.Network
		if n.DefaultInterface.Name != "eth0" || n.DefaultInterface.RxErrors == nil || n.DefaultInterface.TxErrors == nil {
			t.Errorf("default interface %v", n.DefaultInterface)
		}
		for _, i := range n.Interfaces {
			if i.Name == "lo" {
				t.Errorf("interfaces %v", n.Interfaces)
			}
		}
	})

	t.Run("pod", func(t *testing.T) {
		ps := d.podStats(t, podA)
		var ids []string
		var wantProcs uint64
		for _, c := range ps.Linux.Containers {
			ids = append(ids, c.Attributes.Id)
			wantProcs += uint64(len(cgroupPIDs(t, cg(c.Attributes.Id))))
		}
		slices.Sort(ids)
		want := []string{memC, busyC, diskC}
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("pod a's containers %v, want %v", ids, want)
		}
		if got := ps.Linux.Process.ProcessCount.Value; got != wantProcs || got < 5 {
			t.Errorf("pod a has %d processes, its cgroups %d", got, wantProcs)
		}
		// Pod a's own cgroup holds all of its containers.
		if !cgroups.IsCgroup2UnifiedMode() {
			busy := d.ctrStats(t, busyC).Cpu.UsageCoreNanoSeconds.Value
			podCPU := uint64(readCgroupInt(t, "cpuacct", parent, "cpuacct.usage"))
			if got := ps.Linux.Cpu.UsageCoreNanoSeconds.Value; got > podCPU || got < busy/2 {
				t.Errorf("pod a CPU %d ns, its cgroup's %d, its busy container's %d", got, podCPU, busy)
			}
		}
		if ps.Linux.Memory.WorkingSetBytes.Value < 64*mib || ps.Linux.Cpu.UsageNanoCores == nil {
			t.Errorf("pod a memory %v cpu %v", ps.Linux.Memory, ps.Linux.Cpu)
		}
		// Pod b is the sum of its one container (sleeping: stable).
		pb := d.podStats(t, podB)
		c := pb.Linux.Containers[0]
		if len(pb.Linux.Containers) != 1 || pb.Linux.Memory.UsageBytes.Value != c.Memory.UsageBytes.Value ||
			pb.Linux.Cpu.UsageCoreNanoSeconds.Value != c.Cpu.UsageCoreNanoSeconds.Value {
			t.Errorf("pod b %v, its container %v", pb.Linux, c)
		}
		if pb.Attributes.Labels["pod"] != "b" || pb.Attributes.Metadata.Name != "stats-b" {
			t.Errorf("pod b attributes %v", pb.Attributes)
		}
	})

	t.Run("filters and streams", func(t *testing.T) {
		ids := func(ss []*runtimeapi.ContainerStats) []string {
			var out []string
			for _, s := range ss {
				out = append(out, s.Attributes.Id)
			}
			slices.Sort(out)
			return out
		}
		all := []string{memC, busyC, diskC, sleepC}
		slices.Sort(all)
		for _, tc := range []struct {
			f    *runtimeapi.ContainerStatsFilter
			want []string
		}{
			{nil, all},
			{&runtimeapi.ContainerStatsFilter{Id: busyC[:12]}, []string{busyC}},
			{&runtimeapi.ContainerStatsFilter{Id: "ffffffffffffffff"}, nil},
			{&runtimeapi.ContainerStatsFilter{PodSandboxId: podB}, []string{sleepC}},
			{&runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"kind": "mem"}}, []string{memC}},
			{&runtimeapi.ContainerStatsFilter{LabelSelector: map[string]string{"kind": "none"}}, nil},
		} {
			r, err := d.rs.ListContainerStats(bg, &runtimeapi.ListContainerStatsRequest{Filter: tc.f})
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(r.Stats); !slices.Equal(got, tc.want) {
				t.Errorf("filter %v: %v, want %v", tc.f, got, tc.want)
			}
		}
		if _, err := d.rs.ContainerStats(bg, &runtimeapi.ContainerStatsRequest{ContainerId: "0123456789abcdef"}); status.Code(err) != codes.NotFound {
			t.Errorf("stats of an unknown container: %v", err)
		}
		if _, err := d.rs.PodSandboxStats(bg, &runtimeapi.PodSandboxStatsRequest{}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("stats of no pod: %v", err)
		}
		r, err := d.rs.ListPodSandboxStats(bg, &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"pod": "b"}}})
		if err != nil || len(r.Stats) != 1 || r.Stats[0].Attributes.Id != podB {
			t.Errorf("pod stats by label: %v %v", r, err)
		}

		// Every Stream* gives each item once, then EOF.
		streamed := func(recv func() ([]string, error)) []string {
			var out []string
			for {
				got, err := recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("stream: %v", err)
				}
				if len(got) == 0 {
					t.Error("a stream message without items")
				}
				out = append(out, got...)
			}
			slices.Sort(out)
			return out
		}
		cs, err := d.rs.StreamContainerStats(bg, &runtimeapi.StreamContainerStatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := streamed(func() ([]string, error) {
			m, err := cs.Recv()
			return ids(m.GetContainerStats()), err
		}); !slices.Equal(got, all) {
			t.Errorf("StreamContainerStats: %v, want %v", got, all)
		}
		sc, err := d.rs.StreamContainers(bg, &runtimeapi.StreamContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := streamed(func() ([]string, error) {
			m, err := sc.Recv()
			var out []string
			for _, c := range m.GetContainers() {
				out = append(out, c.Id)
			}
			return out, err
		}); !slices.Equal(got, all) {
			t.Errorf("StreamContainers: %v, want %v", got, all)
		}
		pods := []string{podA, podB}
		slices.Sort(pods)
		sp, err := d.rs.StreamPodSandboxes(bg, &runtimeapi.StreamPodSandboxesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := streamed(func() ([]string, error) {
			m, err := sp.Recv()
			var out []string
			for _, p := range m.GetPodSandboxes() {
				out = append(out, p.Id)
			}
			return out, err
		}); !slices.Equal(got, pods) {
			t.Errorf("StreamPodSandboxes: %v, want %v", got, pods)
		}
		sps, err := d.rs.StreamPodSandboxStats(bg, &runtimeapi.StreamPodSandboxStatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := streamed(func() ([]string, error) {
			m, err := sps.Recv()
			var out []string
			for _, p := range m.GetPodSandboxStats() {
				out = append(out, p.Attributes.Id)
			}
			return out, err
		}); !slices.Equal(got, pods) {
			t.Errorf("StreamPodSandboxStats: %v, want %v", got, pods)
		}
		spm, err := d.rs.StreamPodSandboxMetrics(bg, &runtimeapi.StreamPodSandboxMetricsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := streamed(func() ([]string, error) {
			m, err := spm.Recv()
			var out []string
			for _, p := range m.GetPodSandboxMetrics() {
				out = append(out, p.PodSandboxId)
			}
			return out, err
		}); !slices.Equal(got, pods) {
			t.Errorf("StreamPodSandboxMetrics: %v, want %v", got, pods)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		dr, err := d.rs.ListMetricDescriptors(bg, &runtimeapi.ListMetricDescriptorsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		keys := map[string][]string{}
		for _, desc := range dr.Descriptors {
			if desc.Help == "" || len(desc.LabelKeys) == 0 {
				t.Errorf("descriptor %v", desc)
			}
			keys[desc.Name] = desc.LabelKeys
		}
		mr, err := d.rs.ListPodSandboxMetrics(bg, &runtimeapi.ListPodSandboxMetricsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		values := map[string]map[string]uint64{} // metric -> joined labels -> value
		for _, pm := range mr.PodMetrics {
			ms := pm.Metrics
			for _, cm := range pm.ContainerMetrics {
				ms = append(ms, cm.Metrics...)
			}
			for _, m := range ms {
				if len(m.LabelValues) != len(keys[m.Name]) {
					t.Errorf("%s: labels %v, descriptor %v", m.Name, m.LabelValues, keys[m.Name])
				}
				if values[m.Name] == nil {
					values[m.Name] = map[string]uint64{}
				}
				values[m.Name][strings.Join(m.LabelValues, ",")] = m.Value.GetValue()
			}
		}
		// Families kubelet's /metrics/cadvisor users read, with a value.
		for _, name := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
			"container_memory_rss", "container_network_receive_bytes_total", "container_network_transmit_bytes_total",
			"container_fs_usage_bytes", "container_processes", "container_spec_memory_limit_bytes", "container_start_time_seconds"} {
			if len(values[name]) == 0 {
				t.Errorf("no %s", name)
			}
		}
		// Labels: container, id (the cgroup), image, name (the id), namespace, pod.
		ws := values["container_memory_working_set_bytes"][strings.Join([]string{"mem", cg(memC), img, memC, "test", "stats-a"}, ",")]
		if ws < 64*mib || ws > 80*mib {
			t.Errorf("container_memory_working_set_bytes of mem: %d (all: %v)", ws, values["container_memory_working_set_bytes"])
		}
		rx := values["container_network_receive_bytes_total"][strings.Join([]string{"", parent, "", podA, "test", "stats-a", "eth0"}, ",")]
		if rx < mib {
			t.Errorf("pod a received %d bytes (all: %v)", rx, values["container_network_receive_bytes_total"])
		}
		lim := values["container_spec_memory_limit_bytes"][strings.Join([]string{"busy", cg(busyC), img, busyC, "test", "stats-a"}, ",")]
		if lim != 256*mib {
			t.Errorf("container_spec_memory_limit_bytes of busy: %d", lim)
		}

		// The same numbers on /metrics (stats.container_metrics), exact.
		client := e.admin()
		resp, err := client.Get("http://shim/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		found := false
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "container_cpu_usage_seconds_total{") && strings.Contains(l, `name="`+busyC+`"`) {
				f := strings.Fields(l)
				v, _ := strconv.ParseFloat(f[1], 64)
				found = v > 0.5 && strings.Contains(l, `container="busy"`) && strings.Contains(l, `pod="stats-a"`) &&
					strings.Contains(l, `namespace="test"`) && strings.Contains(l, `cpu="total"`)
				if !found {
					t.Errorf("/metrics: %s", l)
				}
			}
		}
		if !found {
			t.Error("/metrics has no container_cpu_usage_seconds_total of the busy container")
		}
	})

	t.Run("update pod resources", func(t *testing.T) {
		req := &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podA,
			Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuPeriod: 100000, CpuQuota: 150000, MemoryLimitInBytes: 512 * mib},
			Overhead:  &runtimeapi.LinuxContainerResources{CpuShares: 10, CpuQuota: 10000, MemoryLimitInBytes: 16 * mib}}
		if _, err := d.rs.UpdatePodSandboxResources(bg, req); err != nil {
			t.Fatal(err)
		}
		if cgroups.IsCgroup2UnifiedMode() {
			b, _ := os.ReadFile(cgroupFile("", parent, "cpu.max"))
			if strings.TrimSpace(string(b)) != "160000 100000" || readCgroupInt(t, "", parent, "memory.max") != 528*mib {
				t.Errorf("pod cgroup cpu.max %q memory.max %d", b, readCgroupInt(t, "", parent, "memory.max"))
			}
		} else {
			// Resources plus overhead: what kubelet writes.
			if v := readCgroupInt(t, "cpu", parent, "cpu.shares"); v != 522 {
				t.Errorf("pod cpu.shares %d", v)
			}
			if v := readCgroupInt(t, "cpu", parent, "cpu.cfs_quota_us"); v != 160000 {
				t.Errorf("pod cpu.cfs_quota_us %d", v)
			}
			if v := readCgroupInt(t, "memory", parent, "memory.limit_in_bytes"); v != 528*mib {
				t.Errorf("pod memory.limit_in_bytes %d", v)
			}
		}
		// A pod without a cgroup of its own records them.
		if _, err := d.rs.UpdatePodSandboxResources(bg, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podB,
			Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512}}); err != nil {
			t.Errorf("pod without a cgroup parent: %v", err)
		}
		type refused struct {
			req  *runtimeapi.UpdatePodSandboxResourcesRequest
			code codes.Code
		}
		cases := []refused{
			{&runtimeapi.UpdatePodSandboxResourcesRequest{}, codes.InvalidArgument},
			{&runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: "0123456789abcdef"}, codes.NotFound},
			{&runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podA, Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}}, codes.InvalidArgument},
			{&runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podA, Resources: &runtimeapi.LinuxContainerResources{CpuShares: 1}}, codes.InvalidArgument},
		}
		if !cgroups.IsCgroup2UnifiedMode() {
			// Below what the pod uses (its 64 MiB holder): a v1 kernel
			// refuses (v2 would OOM-kill instead).
			cases = append(cases, refused{&runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podA,
				Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 8 * mib}}, codes.FailedPrecondition})
		}
		for _, tc := range cases {
			if _, err := d.rs.UpdatePodSandboxResources(bg, tc.req); status.Code(err) != tc.code {
				t.Errorf("%v: %v, want %v", tc.req, err, tc.code)
			}
		}
		if v := readCgroupInt(t, "memory", parent, "memory.limit_in_bytes"); !cgroups.IsCgroup2UnifiedMode() && v != 528*mib {
			t.Errorf("a refused update changed the limit to %d", v)
		}
	})

	d.removeAllPods(t)
	// Stats of what is gone.
	if _, err := d.rs.PodSandboxStats(bg, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podA}); status.Code(err) != codes.NotFound {
		t.Errorf("stats of a removed pod: %v", err)
	}
	if r, err := d.rs.ListContainerStats(bg, &runtimeapi.ListContainerStatsRequest{}); err != nil || len(r.Stats) != 0 {
		t.Errorf("stats after removal: %v %v", r, err)
	}
	d.stop(t)
}
