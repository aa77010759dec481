package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/cgstats"
)

// The metrics of ListPodSandboxMetrics (and of /metrics with
// stats.container_metrics): cAdvisor's names, types and labels, as
// kubelet's /metrics/cadvisor has them when PodAndContainerStatsFromCRI
// is on. Every series carries cAdvisor's labels: container (the CRI
// container name, "" for the pod), id (the cgroup path), image, name (the
// container or pod sandbox id), namespace and pod.
var baseLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

// metricDef is one metric family.
type metricDef struct {
	name, help string
	typ        runtimeapi.MetricType
	extra      []string // label keys after the base ones
}

const (
	counter = runtimeapi.MetricType_COUNTER
	gauge   = runtimeapi.MetricType_GAUGE
)

// metricDefs are cAdvisor's families that shim reports. container_ulimits_soft
// and container_hugetlb_* are not reported.
var metricDefs = []metricDef{
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", counter, []string{"cpu"}},
	{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", counter, nil},
	{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", counter, nil},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", counter, nil},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", counter, nil},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", counter, nil},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", gauge, nil},
	{"container_memory_working_set_bytes", "Current working set in bytes.", gauge, nil},
	{"container_memory_rss", "Size of RSS in bytes.", gauge, nil},
	{"container_memory_cache", "Number of bytes of page cache memory.", gauge, nil},
	{"container_memory_mapped_file", "Size of memory mapped files in bytes.", gauge, nil},
	{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", gauge, nil},
	{"container_memory_swap", "Container swap usage in bytes.", gauge, nil},
	{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", gauge, nil},
	{"container_memory_failcnt", "Number of memory usage hits limits", counter, nil},
	{"container_memory_failures_total", "Cumulative count of memory allocation failures.", counter, []string{"failure_type", "scope"}},
	{"container_oom_events_total", "Count of out of memory events observed for the container", counter, nil},
	{"container_processes", "Number of processes running inside the container.", gauge, nil},
	{"container_threads", "Number of threads running inside the container", gauge, nil},
	{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", gauge, nil},
	{"container_file_descriptors", "Number of open file descriptors for the container.", gauge, nil},
	{"container_sockets", "Number of open sockets for the container.", gauge, nil},
	{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", gauge, []string{"device"}},
	{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", gauge, []string{"device"}},
	{"container_fs_inodes_total", "Number of Inodes", gauge, []string{"device"}},
	{"container_fs_inodes_free", "Number of available Inodes", gauge, []string{"device"}},
	{"container_fs_reads_bytes_total", "Cumulative count of bytes read", counter, []string{"device"}},
	{"container_fs_reads_total", "Cumulative count of reads completed", counter, []string{"device"}},
	{"container_fs_writes_bytes_total", "Cumulative count of bytes written", counter, []string{"device"}},
	{"container_fs_writes_total", "Cumulative count of writes completed", counter, []string{"device"}},
	{"container_blkio_device_usage_total", "Blkio Device bytes usage", counter, []string{"device", "major", "minor", "operation"}},
	{"container_spec_cpu_period", "CPU period of the container.", gauge, nil},
	{"container_spec_cpu_quota", "CPU quota of the container.", gauge, nil},
	{"container_spec_cpu_shares", "CPU share of the container.", gauge, nil},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", gauge, nil},
	{"container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", gauge, nil},
	{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", gauge, nil},
	{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", gauge, nil},
	{"container_last_seen", "Last time a container was seen by the exporter", gauge, nil},
	{"container_network_receive_bytes_total", "Cumulative count of bytes received", counter, []string{"interface"}},
	{"container_network_receive_packets_total", "Cumulative count of packets received", counter, []string{"interface"}},
	{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", counter, []string{"interface"}},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", counter, []string{"interface"}},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", counter, []string{"interface"}},
	{"container_network_transmit_packets_total", "Cumulative count of packets transmitted", counter, []string{"interface"}},
	{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", counter, []string{"interface"}},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", counter, []string{"interface"}},
}

// psiDefs exist only where cgroups have pressure files (v2).
var psiDefs = []metricDef{
	{"container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU pressure stalls.", counter, nil},
	{"container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", counter, nil},
	{"container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory pressure stalls.", counter, nil},
	{"container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", counter, nil},
	{"container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO pressure stalls.", counter, nil},
	{"container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", counter, nil},
}

// metricTable is the families of this host, fixed at start (kubelet reads
// the descriptors once).
type metricTable struct {
	defs   []*metricDef
	byName map[string]*metricDef
}

func newMetricTable(cgroupVersion int) metricTable {
	t := metricTable{byName: map[string]*metricDef{}}
	all := metricDefs
	if cgroupVersion == 2 {
		all = append(append([]metricDef{}, metricDefs...), psiDefs...)
	}
	for i := range all {
		d := &all[i]
		t.defs = append(t.defs, d)
		t.byName[d.name] = d
	}
	return t
}

func (s *stats) descriptors() []*runtimeapi.MetricDescriptor {
	out := make([]*runtimeapi.MetricDescriptor, len(s.metrics.defs))
	for i, d := range s.metrics.defs {
		out[i] = &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help,
			LabelKeys: append(append([]string{}, baseLabels...), d.extra...)}
	}
	return out
}

// MetricSample is one series' value. Seconds are exact here; the CRI
// carries whole numbers (UInt64Value), so ListPodSandboxMetrics rounds
// them down, as CRI-O does.
type MetricSample struct {
	def    *metricDef
	Labels []string // values of the base labels, then of the family's own
	Value  float64
	Time   time.Time
}

// Name is the metric family's name.
func (m MetricSample) Name() string { return m.def.name }

// ContainerMetrics are one container's samples.
type ContainerMetrics struct {
	ID      string
	Samples []MetricSample
}

// PodMetrics are a pod's samples: pod-level (the network) and per
// container.
type PodMetrics struct {
	PodID      string
	Samples    []MetricSample
	Containers []ContainerMetrics
}

// CRI renders the samples for ListPodSandboxMetrics.
func (p *PodMetrics) CRI() *runtimeapi.PodSandboxMetrics {
	conv := func(ss []MetricSample) []*runtimeapi.Metric {
		out := make([]*runtimeapi.Metric, len(ss))
		for i, m := range ss {
			v := m.Value
			if v < 0 || math.IsNaN(v) {
				v = 0
			}
			out[i] = &runtimeapi.Metric{Name: m.def.name, Timestamp: m.Time.UnixNano(), MetricType: m.def.typ,
				LabelValues: m.Labels, Value: u64(uint64(v))}
		}
		return out
	}
	out := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.PodID, Metrics: conv(p.Samples)}
	for _, c := range p.Containers {
		out.ContainerMetrics = append(out.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: c.ID, Metrics: conv(c.Samples)})
	}
	return out
}

// emitter collects samples of one container or pod.
type emitter struct {
	t    *metricTable
	base []string
	at   time.Time
	out  []MetricSample
}

func (e *emitter) add(name string, v float64, extra ...string) {
	d := e.t.byName[name]
	if d == nil {
		return
	}
	if len(extra) != len(d.extra) {
		panic(fmt.Sprintf("metric %s: %d extra labels, want %d", name, len(extra), len(d.extra)))
	}
	labels := e.base
	if len(extra) > 0 {
		labels = append(append(make([]string, 0, len(e.base)+len(extra)), e.base...), extra...)
	}
	e.out = append(e.out, MetricSample{def: d, Labels: labels, Value: v, Time: e.at})
}

func secs(ns uint64) float64 { return float64(ns) / 1e9 }

func (s *stats) podMetrics(ctx context.Context, sb *Sandbox) *PodMetrics {
	ps := s.samplePod(ctx, sb, cgstats.All)
	cfg := ps.v.config
	ns, pod := cfg.GetMetadata().GetNamespace(), cfg.GetMetadata().GetName()
	out := &PodMetrics{PodID: ps.v.ID}
	if ps.hasNet {
		e := &emitter{t: &s.metrics, base: []string{"", ps.cgroup, "", ps.v.ID, ns, pod}, at: ps.at}
		for _, i := range ps.net {
			e.add("container_network_receive_bytes_total", float64(i.RxBytes), i.Name)
			e.add("container_network_receive_packets_total", float64(i.RxPackets), i.Name)
			e.add("container_network_receive_packets_dropped_total", float64(i.RxDropped), i.Name)
			e.add("container_network_receive_errors_total", float64(i.RxErrors), i.Name)
			e.add("container_network_transmit_bytes_total", float64(i.TxBytes), i.Name)
			e.add("container_network_transmit_packets_total", float64(i.TxPackets), i.Name)
			e.add("container_network_transmit_packets_dropped_total", float64(i.TxDropped), i.Name)
			e.add("container_network_transmit_errors_total", float64(i.TxErrors), i.Name)
		}
		out.Samples = e.out
	}
	for _, x := range ps.ctrs {
		if x.cg == nil && !x.hasLayer {
			continue
		}
		out.Containers = append(out.Containers, ContainerMetrics{ID: x.v.ID, Samples: s.containerMetrics(x, ns, pod)})
	}
	return out
}

// containerMetrics renders one container's samples.
func (s *stats) containerMetrics(x *ctrSample, ns, pod string) []MetricSample {
	st := s.state(x.v.ID)
	s.mu.Lock()
	cgroup := st.cgroup
	s.mu.Unlock()
	e := &emitter{t: &s.metrics, base: []string{x.v.config.GetMetadata().GetName(), cgroup, x.v.ImageName, x.v.ID, ns, pod}, at: x.at}
	e.add("container_last_seen", float64(x.at.Unix()))
	if !x.v.StartedAt.IsZero() {
		e.add("container_start_time_seconds", float64(x.v.StartedAt.Unix()))
	}
	if x.hasLayer && s.fsMount != "" {
		dev := s.fsDevice
		e.add("container_fs_usage_bytes", float64(x.layer.u.Size), dev)
		var st unix.Statfs_t
		if unix.Statfs(s.fsMount, &st) == nil {
			e.add("container_fs_limit_bytes", float64(st.Blocks*uint64(st.Bsize)), dev)
			e.add("container_fs_inodes_total", float64(st.Files), dev)
			e.add("container_fs_inodes_free", float64(st.Ffree), dev)
		}
	}
	cg := x.cg
	if cg == nil {
		return e.out
	}
	if c := cg.CPU; c != nil {
		e.add("container_cpu_usage_seconds_total", secs(c.UsageNs), "total")
		e.add("container_cpu_user_seconds_total", secs(c.UserNs))
		e.add("container_cpu_system_seconds_total", secs(c.SystemNs))
		e.add("container_cpu_cfs_periods_total", float64(c.Periods))
		e.add("container_cpu_cfs_throttled_periods_total", float64(c.ThrottledPeriods))
		e.add("container_cpu_cfs_throttled_seconds_total", secs(c.ThrottledNs))
	}
	if m := cg.Memory; m != nil {
		e.add("container_memory_usage_bytes", float64(m.Usage))
		e.add("container_memory_working_set_bytes", float64(m.WorkingSet))
		e.add("container_memory_rss", float64(m.RSS))
		e.add("container_memory_cache", float64(m.Cache))
		e.add("container_memory_mapped_file", float64(m.MappedFile))
		e.add("container_memory_kernel_usage", float64(m.Kernel))
		e.add("container_memory_swap", float64(m.Swap))
		e.add("container_memory_max_usage_bytes", float64(m.MaxUsage))
		e.add("container_memory_failcnt", float64(m.Failcnt))
		e.add("container_memory_failures_total", float64(m.OwnPgFault), "pgfault", "container")
		e.add("container_memory_failures_total", float64(m.PgFault), "pgfault", "hierarchy")
		e.add("container_memory_failures_total", float64(m.OwnPgMajFault), "pgmajfault", "container")
		e.add("container_memory_failures_total", float64(m.PgMajFault), "pgmajfault", "hierarchy")
		e.add("container_oom_events_total", float64(m.OOMKills))
	}
	if p := cg.Pids; p != nil {
		e.add("container_processes", float64(p.Procs))
		e.add("container_threads", float64(p.Threads))
		e.add("container_threads_max", float64(p.Limit))
		fds, socks := s.fdCounts(cgroup)
		e.add("container_file_descriptors", float64(fds))
		e.add("container_sockets", float64(socks))
	}
	if io := cg.IO; io != nil {
		for _, d := range io.Devices {
			name := s.devName(d.Major, d.Minor)
			maj, min := strconv.FormatUint(d.Major, 10), strconv.FormatUint(d.Minor, 10)
			e.add("container_fs_reads_bytes_total", float64(d.ReadBytes), name)
			e.add("container_fs_reads_total", float64(d.Reads), name)
			e.add("container_fs_writes_bytes_total", float64(d.WriteBytes), name)
			e.add("container_fs_writes_total", float64(d.Writes), name)
			e.add("container_blkio_device_usage_total", float64(d.ReadBytes), name, maj, min, "Read")
			e.add("container_blkio_device_usage_total", float64(d.WriteBytes), name, maj, min, "Write")
		}
	}
	if sp := cg.Spec; sp != nil {
		e.add("container_spec_cpu_period", float64(sp.CPUPeriod))
		if sp.CPUQuota > 0 {
			e.add("container_spec_cpu_quota", float64(sp.CPUQuota))
		}
		e.add("container_spec_cpu_shares", float64(sp.CPUShares))
		e.add("container_spec_memory_limit_bytes", float64(sp.MemoryLimit))
		e.add("container_spec_memory_reservation_limit_bytes", float64(sp.MemoryReservation))
		e.add("container_spec_memory_swap_limit_bytes", float64(sp.MemorySwapLimit))
	}
	if p := cg.PSI; p != nil {
		for _, r := range []struct {
			name string
			p    *cgstats.Pressure
		}{{"cpu", p.CPU}, {"memory", p.Memory}, {"io", p.IO}} {
			if r.p == nil {
				continue
			}
			e.add("container_pressure_"+r.name+"_waiting_seconds_total", float64(r.p.Some.TotalUs)/1e6)
			e.add("container_pressure_"+r.name+"_stalled_seconds_total", float64(r.p.Full.TotalUs)/1e6)
		}
	}
	return e.out
}

// fdCounts counts the open files and sockets of the cgroup's processes.
func (s *stats) fdCounts(cgroup string) (fds, sockets int) {
	if cgroup == "" {
		return 0, 0
	}
	pids, err := s.cg.PIDs(cgroup)
	if err != nil {
		return 0, 0
	}
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		fds += len(ents)
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
				sockets++
			}
		}
	}
	return fds, sockets
}

// devName names a block device ("/dev/vda") from sysfs, once.
func (s *stats) devName(major, minor uint64) string {
	k := [2]uint64{major, minor}
	s.devMu.Lock()
	defer s.devMu.Unlock()
	if n, ok := s.devNames[k]; ok {
		return n
	}
	n := fmt.Sprintf("%d:%d", major, minor)
	if b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "DEVNAME="); ok && v != "" {
				n = "/dev/" + v
			}
		}
	}
	s.devNames[k] = n
	return n
}

func mountTable() ([]*mountinfo.Info, error) { return mountinfo.GetMounts(nil) }
