package engine

import (
	"context"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/cgstats"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// StatsOptions configure the stats and metrics jobs.
type StatsOptions struct {
	// Cgroups reads container and pod cgroups.
	Cgroups cgstats.Reader
	// FsMountpoint is the filesystem ImageFsInfo reports (the root):
	// writable layers live on it, and their fs_id names it.
	FsMountpoint string
}

// StatsJobs are the stats and metrics jobs. They are Quiet: kubelet polls
// them.
type StatsJobs struct {
	Container          *Handler[string, *runtimeapi.ContainerStats]
	ListContainers     *Handler[*runtimeapi.ContainerStatsFilter, []*runtimeapi.ContainerStats]
	Pod                *Handler[string, *runtimeapi.PodSandboxStats]
	ListPods           *Handler[*runtimeapi.PodSandboxStatsFilter, []*runtimeapi.PodSandboxStats]
	MetricDescriptors  *Handler[struct{}, []*runtimeapi.MetricDescriptor]
	PodMetrics         *Handler[struct{}, []*PodMetrics]
	UpdatePodResources *Handler[UpdatePodResourcesRequest, struct{}]

	s *stats
}

// RegisterStats registers the stats jobs of rt's pods and containers on e.
func RegisterStats(e *Engine, rt *RuntimeJobs, o StatsOptions) *StatsJobs {
	r := rt.Runtime
	s := newStats(r, o)
	j := &StatsJobs{s: s}
	j.Container = Register(e, "container_stats", Spec[string, *runtimeapi.ContainerStats]{Quiet: true,
		Args: func(id string) map[string]string { return one(log.FieldContainerID, id) },
		Run: func(ctx context.Context, _ *Job, id string) (*runtimeapi.ContainerStats, error) {
			c, err := r.getContainer(id)
			if err != nil {
				return nil, err
			}
			defer s.prune(false)
			return s.containerStats(ctx, c), nil
		}})
	j.ListContainers = Register(e, "list_container_stats", Spec[*runtimeapi.ContainerStatsFilter, []*runtimeapi.ContainerStats]{Quiet: true,
		Run: func(ctx context.Context, j *Job, f *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
			defer s.prune(true)
			var out []*runtimeapi.ContainerStats
			for _, c := range s.filterContainers(f) {
				out = append(out, s.containerStats(ctx, c))
			}
			return out, nil
		}})
	j.Pod = Register(e, "pod_stats", Spec[string, *runtimeapi.PodSandboxStats]{Quiet: true,
		Args: func(id string) map[string]string { return one(log.FieldPodID, id) },
		Run: func(ctx context.Context, _ *Job, id string) (*runtimeapi.PodSandboxStats, error) {
			sb, err := r.getSandbox(id)
			if err != nil {
				return nil, err
			}
			defer s.prune(false)
			return s.podStats(ctx, sb), nil
		}})
	j.ListPods = Register(e, "list_pod_stats", Spec[*runtimeapi.PodSandboxStatsFilter, []*runtimeapi.PodSandboxStats]{Quiet: true,
		Run: func(ctx context.Context, _ *Job, f *runtimeapi.PodSandboxStatsFilter) ([]*runtimeapi.PodSandboxStats, error) {
			defer s.prune(true)
			var out []*runtimeapi.PodSandboxStats
			for _, sb := range s.filterPods(f) {
				out = append(out, s.podStats(ctx, sb))
			}
			return out, nil
		}})
	j.MetricDescriptors = Register(e, "metric_descriptors", Spec[struct{}, []*runtimeapi.MetricDescriptor]{Quiet: true,
		Run: func(context.Context, *Job, struct{}) ([]*runtimeapi.MetricDescriptor, error) {
			return s.descriptors(), nil
		}})
	j.PodMetrics = Register(e, "pod_metrics", Spec[struct{}, []*PodMetrics]{Quiet: true,
		Run: func(ctx context.Context, _ *Job, _ struct{}) ([]*PodMetrics, error) {
			defer s.prune(true)
			var out []*PodMetrics
			for _, sb := range s.filterPods(nil) {
				out = append(out, s.podMetrics(ctx, sb))
			}
			return out, nil
		}})
	j.UpdatePodResources = Register(e, "update_pod_resources", Spec[UpdatePodResourcesRequest, struct{}]{
		Object: func(q UpdatePodResourcesRequest) string { return "pod:" + r.sandboxID(q.PodID) },
		Args:   func(q UpdatePodResourcesRequest) map[string]string { return one(log.FieldPodID, q.PodID) },
		Run:    r.updatePodResources,
	})
	return j
}

// stats reads container and pod usage and keeps what has to outlive one
// call: the cgroup path of each container, the last CPU sample (for
// usage_nano_cores) and the last walk of each writable layer.
type stats struct {
	r        *Runtime
	cg       cgstats.Reader
	fsMount  string
	fsDevice string
	metrics  metricTable

	mu   sync.Mutex
	ctrs map[string]*ctrState // by container id
	pods map[string]*cpuRate  // by pod id

	devMu    sync.Mutex
	devNames map[[2]uint64]string
}

type ctrState struct {
	cgroup   string // "" when the container has none to read
	resolved bool
	rate     cpuRate

	layerMu sync.Mutex
	layer   layerUsage
}

func newStats(r *Runtime, o StatsOptions) *stats {
	s := &stats{r: r, cg: o.Cgroups, fsMount: o.FsMountpoint, ctrs: map[string]*ctrState{}, pods: map[string]*cpuRate{},
		devNames: map[[2]uint64]string{}}
	s.fsDevice = mountSource(o.FsMountpoint)
	s.metrics = newMetricTable(o.Cgroups.Version())
	return s
}

// Collect reads the pod metrics outside a CRI call (the Prometheus
// endpoint).
func (j *StatsJobs) Collect(ctx context.Context) ([]*PodMetrics, error) {
	return j.PodMetrics.Run(ctx, struct{}{})
}

// state returns the container's state, creating it.
func (s *stats) state(id string) *ctrState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.ctrs[id]
	if st == nil {
		st = &ctrState{}
		s.ctrs[id] = st
	}
	return st
}

// prune forgets containers and pods that are gone: always after a list
// call, after single calls only when the maps grew well past the records.
func (s *stats) prune(list bool) {
	s.r.mu.RLock()
	defer s.r.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !list && len(s.ctrs) <= len(s.r.containers)+64 && len(s.pods) <= len(s.r.sandboxes)+64 {
		return
	}
	for id := range s.ctrs {
		if s.r.containers[id] == nil {
			delete(s.ctrs, id)
		}
	}
	for id := range s.pods {
		if s.r.sandboxes[id] == nil {
			delete(s.pods, id)
		}
	}
}

// cpuRate turns cumulative CPU time into usage_nano_cores, which kubelet
// expects the runtime to compute: the average over the window since an
// earlier sample. A window is at least minRateWindow long, so that two
// clients polling at nearly the same time do not shrink each other's
// window to nothing (the second gets the rate of the first). The first
// sample of a container is averaged over its life so far.
type cpuRate struct {
	at    time.Time
	usage uint64
	rate  uint64
}

const minRateWindow = time.Second

func (c *cpuRate) update(usage uint64, now, start time.Time) uint64 {
	switch {
	case c.at.IsZero() || usage < c.usage:
		// First sample, or the counter went back (a pod summed from its
		// containers lost an exited one).
		c.rate = 0
		if dt := now.Sub(start); !start.IsZero() && dt > 0 {
			c.rate = uint64(float64(usage) / dt.Seconds())
		}
		c.at, c.usage = now, usage
	case now.Sub(c.at) >= minRateWindow:
		c.rate = uint64(float64(usage-c.usage) / now.Sub(c.at).Seconds())
		c.at, c.usage = now, usage
	}
	return c.rate
}

// layerUsage is one walk of a writable layer.
type layerUsage struct {
	u    snapshot.Usage
	at   time.Time
	cost time.Duration
	ok   bool
}

// minLayerAge: a walk younger than this is reused, so the RPCs of one
// kubelet poll walk a layer once. A layer whose walk is slow is re-walked
// at most every layerCostFactor walks' time: its walks take at most 2% of
// the time.
const (
	minLayerAge     = time.Second
	layerCostFactor = 50
)

// writableLayer returns the disk usage of the container's own snapshot:
// overlay's upper directory (every block and inode the container wrote),
// or the whole copy for the native driver.
func (s *stats) writableLayer(ctx context.Context, v *Container, st *ctrState) (layerUsage, bool) {
	st.layerMu.Lock()
	defer st.layerMu.Unlock()
	now := time.Now()
	if st.layer.ok && now.Sub(st.layer.at) < max(minLayerAge, layerCostFactor*st.layer.cost) {
		return st.layer, true
	}
	u, err := s.r.o.Snapshotter.Usage(ctx, v.Snapshot)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField(log.FieldContainerID, v.ID).Debug("writable layer usage")
		}
		return layerUsage{}, false
	}
	st.layer = layerUsage{u: u, at: time.Now(), cost: time.Since(now), ok: true}
	return st.layer, true
}

// cgroupOf returns the container's cgroup, from the spec it was created
// with (read once): the truth even if the config changed since.
func (s *stats) cgroupOf(v *Container, st *ctrState) string {
	s.mu.Lock()
	if st.resolved {
		defer s.mu.Unlock()
		return st.cgroup
	}
	s.mu.Unlock()
	var spec struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	p := ""
	if b, err := os.ReadFile(filepath.Join(v.Bundle, "config.json")); err == nil && json.Unmarshal(b, &spec) == nil {
		if spec.Linux != nil {
			p = spec.Linux.CgroupsPath
		}
		if p == "" {
			p = "/shim/" + v.ID // libct's default
		}
		p = path.Clean("/" + p)
	}
	s.mu.Lock()
	st.cgroup, st.resolved = p, true
	s.mu.Unlock()
	return p
}

// ctrSample is one reading of a container.
type ctrSample struct {
	v         *Container     // a view
	cg        *cgstats.Stats // nil: no cgroup to read (not running)
	at        time.Time
	nanoCores uint64
	layer     layerUsage
	hasLayer  bool
}

// sample reads a container's cgroup (what want asks) and, with layer, its
// writable layer.
func (s *stats) sample(ctx context.Context, c *Container, want cgstats.Want, layer bool) *ctrSample {
	view := c.view()
	v := &view
	st := s.state(v.ID)
	out := &ctrSample{v: v, at: time.Now()}
	if v.State == ContainerRunning || v.State == ContainerCreated {
		if p := s.cgroupOf(v, st); p != "" {
			cg, err := s.cg.Read(p, want)
			out.at = time.Now()
			switch {
			case err == nil:
				out.cg = cg
			case !errdefs.IsNotFound(err):
				log.G(ctx).WithError(err).WithField(log.FieldContainerID, v.ID).Warn("reading the container's cgroup")
			}
		}
	}
	if out.cg != nil && out.cg.CPU != nil {
		start := v.StartedAt
		if start.IsZero() {
			start = v.CreatedAt
		}
		s.mu.Lock()
		out.nanoCores = st.rate.update(out.cg.CPU.UsageNs, out.at, start)
		s.mu.Unlock()
	}
	if layer && !v.Infra {
		out.layer, out.hasLayer = s.writableLayer(ctx, v, st)
	}
	return out
}

func (s *stats) containerStats(ctx context.Context, c *Container) *runtimeapi.ContainerStats {
	return s.toCRI(s.sample(ctx, c, cgstats.Basic, true))
}

// toCRI renders a container sample as kubelet reads it.
func (s *stats) toCRI(x *ctrSample) *runtimeapi.ContainerStats {
	cfg := x.v.config
	out := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
		Id: x.v.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
	}}
	ts := x.at.UnixNano()
	if x.cg != nil {
		out.Cpu = criCPU(x.cg, ts, x.nanoCores)
		out.Memory = criMemory(x.cg, ts)
		out.Swap = criSwap(x.cg, ts)
		out.Io = criIO(x.cg, ts)
	}
	if x.hasLayer {
		out.WritableLayer = &runtimeapi.FilesystemUsage{
			Timestamp:  x.layer.at.UnixNano(),
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: s.fsMount},
			UsedBytes:  &runtimeapi.UInt64Value{Value: uint64(x.layer.u.Size)},
			InodesUsed: &runtimeapi.UInt64Value{Value: uint64(x.layer.u.Inodes)},
		}
	}
	return out
}

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

func criCPU(cg *cgstats.Stats, ts int64, nanoCores uint64) *runtimeapi.CpuUsage {
	if cg.CPU == nil {
		return nil
	}
	out := &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: u64(cg.CPU.UsageNs), UsageNanoCores: u64(nanoCores)}
	if cg.PSI != nil {
		out.Psi = criPSI(cg.PSI.CPU)
	}
	return out
}

func criMemory(cg *cgstats.Stats, ts int64) *runtimeapi.MemoryUsage {
	m := cg.Memory
	if m == nil {
		return nil
	}
	out := &runtimeapi.MemoryUsage{Timestamp: ts, WorkingSetBytes: u64(m.WorkingSet), UsageBytes: u64(m.Usage),
		RssBytes: u64(m.RSS), PageFaults: u64(m.PgFault), MajorPageFaults: u64(m.PgMajFault)}
	if m.Limit > 0 {
		avail := uint64(0)
		if m.Limit > m.WorkingSet {
			avail = m.Limit - m.WorkingSet
		}
		out.AvailableBytes = u64(avail)
	}
	if cg.PSI != nil {
		out.Psi = criPSI(cg.PSI.Memory)
	}
	return out
}

func criSwap(cg *cgstats.Stats, ts int64) *runtimeapi.SwapUsage {
	m := cg.Memory
	if m == nil || !m.SwapKnown {
		return nil
	}
	out := &runtimeapi.SwapUsage{Timestamp: ts, SwapUsageBytes: u64(m.Swap)}
	if m.SwapLimit > 0 {
		avail := uint64(0)
		if m.SwapLimit > m.Swap {
			avail = m.SwapLimit - m.Swap
		}
		out.SwapAvailableBytes = u64(avail)
	}
	return out
}

func criIO(cg *cgstats.Stats, ts int64) *runtimeapi.IoUsage {
	if cg.PSI == nil || cg.PSI.IO == nil {
		return nil
	}
	return &runtimeapi.IoUsage{Timestamp: ts, Psi: criPSI(cg.PSI.IO)}
}

func criPSI(p *cgstats.Pressure) *runtimeapi.PsiStats {
	if p == nil {
		return nil
	}
	d := func(x cgstats.PressureData) *runtimeapi.PsiData {
		return &runtimeapi.PsiData{Total: x.TotalUs * 1000, Avg10: x.Avg10, Avg60: x.Avg60, Avg300: x.Avg300}
	}
	return &runtimeapi.PsiStats{Some: d(p.Some), Full: d(p.Full)}
}

// filterContainers lists the CRI containers (no infra) a stats filter
// selects, oldest first. Ids and pod ids may be unique prefixes, as in
// ListContainers.
func (s *stats) filterContainers(f *runtimeapi.ContainerStatsFilter) []*Container {
	r := s.r
	r.mu.RLock()
	wantID, wantPod := "", ""
	if f.GetId() != "" {
		if wantID, _ = resolve(r.containers, f.GetId()); wantID == "" {
			wantID = "\x00none"
		}
	}
	if f.GetPodSandboxId() != "" {
		if wantPod, _ = resolve(r.sandboxes, f.GetPodSandboxId()); wantPod == "" {
			wantPod = "\x00none"
		}
	}
	var out []*Container
	for _, c := range r.containers {
		if c.Infra || wantID != "" && c.ID != wantID || wantPod != "" && c.SandboxID != wantPod {
			continue
		}
		if labelsMatch(c.config.GetLabels(), f.GetLabelSelector()) {
			out = append(out, c)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// filterPods lists the pods a stats filter selects, oldest first.
func (s *stats) filterPods(f *runtimeapi.PodSandboxStatsFilter) []*Sandbox {
	r := s.r
	r.mu.RLock()
	wantID := ""
	if f.GetId() != "" {
		if wantID, _ = resolve(r.sandboxes, f.GetId()); wantID == "" {
			wantID = "\x00none"
		}
	}
	var out []*Sandbox
	for id, sb := range r.sandboxes {
		if wantID != "" && id != wantID {
			continue
		}
		if labelsMatch(sb.config.GetLabels(), f.GetLabelSelector()) {
			out = append(out, sb)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// podSample is one reading of a pod: its own cgroup (or the sum of its
// containers'), its containers, its network.
type podSample struct {
	v      *Sandbox // a view
	cgroup string   // the pod's own cgroup, "" for none
	cg     *cgstats.Stats
	at     time.Time
	cores  uint64
	procs  uint64
	ctrs   []*ctrSample // CRI containers, oldest first
	net    []ifaceStats
	hasNet bool
}

func (s *stats) samplePod(ctx context.Context, sb *Sandbox, want cgstats.Want) *podSample {
	view := sb.view()
	v := &view
	ps := &podSample{v: v}
	var all []*ctrSample
	for _, c := range s.r.podContainers(v.ID) {
		x := s.sample(ctx, c, want|cgstats.Procs, true)
		all = append(all, x)
		if !x.v.Infra {
			ps.ctrs = append(ps.ctrs, x)
		}
		if x.cg != nil && x.cg.Pids != nil {
			ps.procs += x.cg.Pids.Procs
		}
	}
	own, err := specgen.PodCgroup(v.config)
	if err == nil && own != "" {
		ps.cgroup = own
		cg, err := s.cg.Read(own, want&(cgstats.CPU|cgstats.Memory|cgstats.PSI|cgstats.Detail)&^cgstats.Procs)
		switch {
		case err == nil:
			ps.cg, ps.at = cg, time.Now()
		case !errdefs.IsNotFound(err):
			log.G(ctx).WithError(err).WithField(log.FieldPodID, v.ID).Warn("reading the pod's cgroup")
		}
	}
	if ps.cg == nil {
		// No cgroup of its own: the pod is the sum of its containers.
		ps.cg, ps.at = sumStats(all), time.Now()
	}
	if ps.cg.CPU != nil {
		s.mu.Lock()
		rate := s.pods[v.ID]
		if rate == nil {
			rate = &cpuRate{}
			s.pods[v.ID] = rate
		}
		ps.cores = rate.update(ps.cg.CPU.UsageNs, ps.at, v.CreatedAt)
		s.mu.Unlock()
	}
	if v.NetNS != "" && v.State == SandboxReady {
		ifs, err := netnsStats(v.NetNS)
		if err != nil {
			log.G(ctx).WithError(err).WithField(log.FieldPodID, v.ID).Debug("reading the pod's network counters")
		} else {
			ps.net, ps.hasNet = ifs, true
		}
	}
	return ps
}

// sumStats adds up the CPU and memory of containers.
func sumStats(xs []*ctrSample) *cgstats.Stats {
	sum := &cgstats.Stats{CPU: &cgstats.CPUStats{}, Memory: &cgstats.MemoryStats{}}
	for _, x := range xs {
		if x.cg == nil {
			continue
		}
		if c := x.cg.CPU; c != nil {
			sum.CPU.UsageNs += c.UsageNs
			sum.CPU.UserNs += c.UserNs
			sum.CPU.SystemNs += c.SystemNs
		}
		if m := x.cg.Memory; m != nil {
			sm := sum.Memory
			sm.Usage += m.Usage
			sm.WorkingSet += m.WorkingSet
			sm.RSS += m.RSS
			sm.Cache += m.Cache
			sm.PgFault += m.PgFault
			sm.PgMajFault += m.PgMajFault
			sm.Swap += m.Swap
			sm.SwapKnown = sm.SwapKnown || m.SwapKnown
		}
	}
	return sum
}

func (s *stats) podStats(ctx context.Context, sb *Sandbox) *runtimeapi.PodSandboxStats {
	ps := s.samplePod(ctx, sb, cgstats.Basic)
	cfg := ps.v.config
	ts := ps.at.UnixNano()
	linux := &runtimeapi.LinuxPodSandboxStats{
		Cpu:     criCPU(ps.cg, ts, ps.cores),
		Memory:  criMemory(ps.cg, ts),
		Io:      criIO(ps.cg, ts),
		Process: &runtimeapi.ProcessUsage{Timestamp: ts, ProcessCount: u64(ps.procs)},
	}
	for _, x := range ps.ctrs {
		linux.Containers = append(linux.Containers, s.toCRI(x))
	}
	if ps.hasNet {
		n := &runtimeapi.NetworkUsage{Timestamp: ts}
		for _, i := range ps.net {
			iu := &runtimeapi.NetworkInterfaceUsage{Name: i.Name, RxBytes: u64(i.RxBytes), RxErrors: u64(i.RxErrors),
				TxBytes: u64(i.TxBytes), TxErrors: u64(i.TxErrors)}
			n.Interfaces = append(n.Interfaces, iu)
			if i.Name == podInterface {
				n.DefaultInterface = iu
			}
		}
		linux.Network = n
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: ps.v.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(),
			Annotations: cfg.GetAnnotations()},
		Linux: linux,
	}
}

// mountSource is the device of the filesystem holding dir ("" unknown).
func mountSource(dir string) string {
	best, src := -1, ""
	ms, err := mountTable()
	if err != nil {
		return ""
	}
	for _, m := range ms {
		if (dir == m.Mountpoint || len(dir) > len(m.Mountpoint) && dir[:len(m.Mountpoint)] == m.Mountpoint &&
			(m.Mountpoint == "/" || dir[len(m.Mountpoint)] == '/')) && len(m.Mountpoint) > best {
			best, src = len(m.Mountpoint), m.Source
		}
	}
	return src
}
