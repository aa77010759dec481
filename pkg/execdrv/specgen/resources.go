package specgen

import (
	"context"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/log"
)

// DefaultCgroupRoot is the cgroup parent of pods whose config gives none.
const DefaultCgroupRoot = "/shim"

// Limits of the CPU controller (cgroup v1 and the kernel's CFS bandwidth).
const (
	minShares = 2
	maxShares = 262144
	minPeriod = 1000    // 1ms
	maxPeriod = 1000000 // 1s
	minQuota  = 1000
)

// CgroupsPath is the cgroupfs path of a pod's container (or, with the pod
// id, of its infra process): the pod's cgroup parent, as kubelet's cgroupfs
// driver gives it ("/kubepods/burstable/pod<uid>"), joined with the id. A
// systemd slice name ("kubepods-burstable-pod<uid>.slice") is expanded to
// its cgroupfs path. A pod without a parent gets Options.CgroupRoot.
func CgroupsPath(pod Pod, id string, o Options) (string, error) {
	if err := checkID("container", id); err != nil {
		return "", err
	}
	parent, err := cgroupParent(pod.Config.GetLinux().GetCgroupParent())
	if err != nil {
		return "", err
	}
	if parent == "" {
		parent = o.CgroupRoot
		if parent == "" {
			parent = DefaultCgroupRoot
		}
		if parent, err = cgroupParent(parent); err != nil {
			return "", err
		}
	}
	return path.Join(parent, id), nil
}

// cgroupParent validates and normalizes a cgroup parent ("" stays "").
func cgroupParent(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	if hasCtl(p) || len(p) > 4096 {
		return "", inval("cgroup parent %q", p)
	}
	if !strings.Contains(p, "/") && strings.HasSuffix(p, ".slice") {
		return expandSlice(p)
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return "", inval("cgroup parent %q has a .. component", p)
		}
	}
	return path.Clean("/" + p), nil
}

// expandSlice turns a systemd slice name into its cgroupfs path:
// "a-b-c.slice" is /a.slice/a-b.slice/a-b-c.slice; "-.slice" is the root.
func expandSlice(s string) (string, error) {
	if s == "-.slice" {
		return "/", nil
	}
	name := strings.TrimSuffix(s, ".slice")
	if name == "" || strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") || strings.Contains(name, "--") {
		return "", inval("systemd slice %q", s)
	}
	out, prefix := "", ""
	for _, part := range strings.Split(name, "-") {
		prefix += part
		out += "/" + prefix + ".slice"
		prefix += "-"
	}
	return out, nil
}

// resources converts the CRI container resources. oom_score_adj is set on
// the process by the caller; device rules are added by the caller.
func resources(ctx context.Context, r *runtimeapi.LinuxContainerResources, o Options) (*specs.LinuxResources, error) {
	out := &specs.LinuxResources{}
	if o.PidsLimit > 0 {
		out.Pids = &specs.LinuxPids{Limit: i64(o.PidsLimit)}
	}
	if r == nil {
		return out, nil
	}
	if err := checkResources(r); err != nil {
		return nil, err
	}
	cpu := &specs.LinuxCPU{Cpus: r.GetCpusetCpus(), Mems: r.GetCpusetMems()}
	if v := r.GetCpuShares(); v > 0 {
		u := uint64(v)
		cpu.Shares = &u
	}
	if v := r.GetCpuQuota(); v != 0 {
		cpu.Quota = i64(v)
	}
	if v := r.GetCpuPeriod(); v > 0 {
		u := uint64(v)
		cpu.Period = &u
	}
	if *cpu != (specs.LinuxCPU{}) {
		out.CPU = cpu
	}
	mem := &specs.LinuxMemory{}
	if v := r.GetMemoryLimitInBytes(); v > 0 {
		mem.Limit = i64(v)
	}
	if v := r.GetMemorySwapLimitInBytes(); v != 0 {
		if o.SwapAccounting {
			mem.Swap = i64(v)
		} else {
			log.G(ctx).Debug("memory_swap_limit_in_bytes ignored: the host has no swap accounting")
		}
	}
	if mem.Limit != nil || mem.Swap != nil {
		out.Memory = mem
	}
	for _, h := range r.GetHugepageLimits() {
		if o.HugepageSizes == nil {
			log.G(ctx).WithField("page_size", h.GetPageSize()).Debug("hugepage limit ignored: no hugetlb controller")
			continue
		}
		if !slices.Contains(o.HugepageSizes, h.GetPageSize()) {
			return nil, inval("hugepage limit: page size %s is not one of the host's %v", h.GetPageSize(), o.HugepageSizes)
		}
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	if u := r.GetUnified(); len(u) > 0 {
		if !o.CgroupV2 {
			return nil, inval("unified cgroup resources need a cgroup v2 host")
		}
		out.Unified = make(map[string]string, len(u))
		for k, v := range u {
			out.Unified[k] = v
		}
	}
	return out, nil
}

var (
	pageSizeRe    = regexp.MustCompile(`^[1-9][0-9]*(KB|MB|GB|TB|PB)$`)
	unifiedKeyRe  = regexp.MustCompile(`^[a-z][a-z0-9_]*\.[a-z0-9_.]+$`)
	cpusetEntryRe = regexp.MustCompile(`^[0-9]+(-[0-9]+)?$`)
)

// checkResources refuses negative and absurd values.
func checkResources(r *runtimeapi.LinuxContainerResources) error {
	if r == nil {
		return nil
	}
	if v := r.GetCpuShares(); v != 0 && (v < minShares || v > maxShares) {
		return inval("cpu_shares %d out of range [%d, %d]", v, minShares, maxShares)
	}
	if v := r.GetCpuPeriod(); v != 0 && (v < minPeriod || v > maxPeriod) {
		return inval("cpu_period %d out of range [%d, %d]", v, minPeriod, maxPeriod)
	}
	if v := r.GetCpuQuota(); v != 0 && v != -1 && v < minQuota {
		return inval("cpu_quota %d: want -1 (unlimited) or at least %d", v, minQuota)
	}
	if v := r.GetMemoryLimitInBytes(); v < 0 {
		return inval("memory_limit_in_bytes %d is negative", v)
	}
	swap, limit := r.GetMemorySwapLimitInBytes(), r.GetMemoryLimitInBytes()
	switch {
	case swap < -1:
		return inval("memory_swap_limit_in_bytes %d: want -1 (unlimited) or a size", swap)
	case swap > 0 && limit > 0 && swap < limit:
		return inval("memory_swap_limit_in_bytes %d is below memory_limit_in_bytes %d (it counts memory plus swap)", swap, limit)
	case swap > 0 && limit == 0:
		return inval("memory_swap_limit_in_bytes needs memory_limit_in_bytes")
	}
	if v := r.GetOomScoreAdj(); v < -1000 || v > 1000 {
		return inval("oom_score_adj %d out of range [-1000, 1000]", v)
	}
	for _, f := range []struct{ name, v string }{{"cpuset_cpus", r.GetCpusetCpus()}, {"cpuset_mems", r.GetCpusetMems()}} {
		if err := checkCpuset(f.name, f.v); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, h := range r.GetHugepageLimits() {
		if !pageSizeRe.MatchString(h.GetPageSize()) {
			return inval("hugepage limit: page size %q", h.GetPageSize())
		}
		if seen[h.GetPageSize()] {
			return inval("hugepage limit: page size %s given twice", h.GetPageSize())
		}
		seen[h.GetPageSize()] = true
	}
	for k, v := range r.GetUnified() {
		if !unifiedKeyRe.MatchString(k) || strings.Contains(k, "..") {
			return inval("unified resource key %q", k)
		}
		if hasCtl(v) {
			return inval("unified resource %s: value %q", k, v)
		}
	}
	return nil
}

// checkCpuset checks a cpuset list ("0-3,8,10-11").
func checkCpuset(name, v string) error {
	if v == "" {
		return nil
	}
	if len(v) > 4096 {
		return inval("%s is too long", name)
	}
	for _, e := range strings.Split(v, ",") {
		if !cpusetEntryRe.MatchString(e) {
			return inval("%s %q", name, v)
		}
		if lo, hi, ok := strings.Cut(e, "-"); ok {
			a, err1 := strconv.ParseUint(lo, 10, 32)
			b, err2 := strconv.ParseUint(hi, 10, 32)
			if err1 != nil || err2 != nil || a > b {
				return inval("%s %q", name, v)
			}
		} else if _, err := strconv.ParseUint(e, 10, 32); err != nil {
			return inval("%s %q", name, v)
		}
	}
	return nil
}
