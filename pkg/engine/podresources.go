package engine

import (
	"context"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/libct"
)

// UpdatePodResourcesRequest is UpdatePodSandboxResources: the pod-level
// resources kubelet is about to write to the pod's cgroup on an in-place
// resize, without the pod overhead, and the overhead.
type UpdatePodResourcesRequest struct {
	PodID     string
	Overhead  *runtimeapi.LinuxContainerResources
	Resources *runtimeapi.LinuxContainerResources
}

// updatePodResources validates the resources, applies them (plus the
// overhead, which is what kubelet writes) to the pod's cgroup and records
// them. A pod without a cgroup of its own (no cgroup_parent: its
// containers share shim's cgroup root) has nothing to apply them to; they
// are recorded and the job log says so.
func (r *Runtime) updatePodResources(ctx context.Context, j *Job, req UpdatePodResourcesRequest) (struct{}, error) {
	sb, err := r.getSandbox(req.PodID)
	if err != nil {
		return struct{}{}, err
	}
	total := podTotal(req.Resources, req.Overhead)
	res, err := specgen.Resources(ctx, total, r.o.Spec)
	if err != nil {
		return struct{}{}, fmt.Errorf("pod resources: %w", err)
	}
	if _, err := specgen.Resources(ctx, req.Overhead, r.o.Spec); err != nil {
		return struct{}{}, fmt.Errorf("pod overhead: %w", err)
	}
	v := sb.view()
	cg, err := specgen.PodCgroup(v.config)
	if err != nil {
		return struct{}{}, err
	}
	switch {
	case cg == "":
		j.Logf("pod has no cgroup of its own (no cgroup_parent): resources recorded, nothing to apply")
	case v.State != SandboxReady:
		return struct{}{}, fmt.Errorf("pod sandbox %s is not ready: %w", v.ID, errdefs.ErrFailedPrecondition)
	default:
		// Pod-level limits only: no pids or device rules for the pod.
		pod := &specs.LinuxResources{CPU: res.CPU, Memory: res.Memory, HugepageLimits: res.HugepageLimits, Unified: res.Unified}
		if err := applyCgroup(cg, pod); err != nil {
			return struct{}{}, fmt.Errorf("pod cgroup %s: %w", cg, err)
		}
		j.Logf("applied to pod cgroup %s", cg)
	}
	pb, err := proto.Marshal(&runtimeapi.UpdatePodSandboxResourcesRequest{Overhead: req.Overhead, Resources: req.Resources})
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.updateSandbox(sb, func(sb *Sandbox) { sb.ResourcesPB = pb })
}

// podTotal is what kubelet writes to the pod cgroup: the resources plus
// the overhead it subtracted from them.
func podTotal(res, overhead *runtimeapi.LinuxContainerResources) *runtimeapi.LinuxContainerResources {
	if res == nil {
		return nil
	}
	t := proto.Clone(res).(*runtimeapi.LinuxContainerResources)
	if overhead == nil {
		return t
	}
	if t.CpuShares > 0 {
		t.CpuShares += overhead.GetCpuShares()
	}
	if t.CpuQuota > 0 && overhead.GetCpuQuota() > 0 {
		t.CpuQuota += overhead.GetCpuQuota()
	}
	if t.MemoryLimitInBytes > 0 && overhead.GetMemoryLimitInBytes() > 0 {
		t.MemoryLimitInBytes += overhead.GetMemoryLimitInBytes()
	}
	return t
}

// applyCgroup writes resources to an existing cgroup (libct's managers:
// v1 or v2, as the host has).
func applyCgroup(path string, res *specs.LinuxResources) error {
	err := libct.UpdateCgroup(path, res)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("it does not exist: %w", errdefs.ErrFailedPrecondition)
	}
	return classify(err)
}

// classify gives a kernel refusal its class: by its errno (EBUSY, a memory
// limit below the usage, is a failed precondition), and otherwise a value
// the kernel refused (EINVAL: a quota above the parent's, a bad value).
func classify(err error) error {
	if err == nil || errdefs.Classified(err) {
		return err
	}
	return fmt.Errorf("%w: %w", err, errdefs.OSClass(err, errdefs.ErrInvalidArgument))
}
