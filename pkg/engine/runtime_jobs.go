package engine

import (
	"context"
	"encoding/json"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/timeline"
)

// RuntimeJobs are the pod and container jobs.
type RuntimeJobs struct {
	RunPod      *Handler[RunPodRequest, *Sandbox]
	StopPod     *Handler[string, struct{}]
	RemovePod   *Handler[string, struct{}]
	PodStatus   *Handler[string, *runtimeapi.PodSandboxStatus]
	ListPods    *Handler[*PodFilter, []*Sandbox]
	Create      *Handler[CreateContainerRequest, *Container]
	Start       *Handler[string, struct{}]
	Stop        *Handler[StopContainerRequest, struct{}]
	Remove      *Handler[string, struct{}]
	Status      *Handler[string, *runtimeapi.ContainerStatus]
	List        *Handler[*ContainerFilter, []*Container]
	ExecSync    *Handler[ExecSyncRequest, *ExecSyncResult]
	Update      *Handler[UpdateResourcesRequest, struct{}]
	ReopenLog   *Handler[string, struct{}]
	UpdateNetwk *Handler[string, struct{}]

	*Runtime
}

// RegisterRuntime opens the runtime (recovering pods and containers) and
// registers its jobs on e.
func RegisterRuntime(ctx context.Context, e *Engine, o RuntimeOptions) (*RuntimeJobs, error) {
	r, err := newRuntime(ctx, o)
	if err != nil {
		return nil, err
	}
	pod := func(id string) string { return "pod:" + r.sandboxID(id) }
	ctr := func(id string) string { return "ctr:" + r.containerID(id) }
	j := &RuntimeJobs{Runtime: r}
	j.RunPod = Register(e, "run_pod", Spec[RunPodRequest, *Sandbox]{
		Timeline: true,
		Object:   func(q RunPodRequest) string { return "podname:" + podName(q.Config.GetMetadata()) },
		Args: func(q RunPodRequest) map[string]string {
			return map[string]string{"name": podName(q.Config.GetMetadata()), "handler": q.Handler}
		},
		Run: r.runPod,
	})
	j.StopPod = Register(e, "stop_pod", Spec[string, struct{}]{Object: pod, Args: func(id string) map[string]string { return one(log.FieldPodID, id) }, Run: r.stopPod})
	j.RemovePod = Register(e, "remove_pod", Spec[string, struct{}]{Object: pod, Args: func(id string) map[string]string { return one(log.FieldPodID, id) }, Run: r.removePod})
	j.PodStatus = Register(e, "pod_status", Spec[string, *runtimeapi.PodSandboxStatus]{Quiet: true,
		Args: func(id string) map[string]string { return one(log.FieldPodID, id) },
		Run: func(ctx context.Context, _ *Job, id string) (*runtimeapi.PodSandboxStatus, error) {
			sb, err := r.getSandbox(id)
			if err != nil {
				return nil, err
			}
			return r.sandboxStatus(sb), nil
		}})
	j.ListPods = Register(e, "list_pods", Spec[*PodFilter, []*Sandbox]{Quiet: true, Run: r.listPods})
	j.Create = Register(e, "create", Spec[CreateContainerRequest, *Container]{
		Timeline: true,
		Object:   func(q CreateContainerRequest) string { return "pod:" + r.sandboxID(q.PodID) },
		Args: func(q CreateContainerRequest) map[string]string {
			return map[string]string{log.FieldPodID: q.PodID, "name": q.Config.GetMetadata().GetName(), log.FieldImage: q.Config.GetImage().GetImage()}
		},
		Run: r.createContainer,
	})
	j.Start = Register(e, "start", Spec[string, struct{}]{Timeline: true, Object: ctr,
		Args: func(id string) map[string]string { return one(log.FieldContainerID, id) }, Run: r.startContainer})
	j.Stop = Register(e, "stop", Spec[StopContainerRequest, struct{}]{
		Object: func(q StopContainerRequest) string { return ctr(q.ID) },
		Args: func(q StopContainerRequest) map[string]string {
			return map[string]string{log.FieldContainerID: q.ID, "timeout": q.Timeout.String()}
		},
		Run: r.stopContainer,
	})
	j.Remove = Register(e, "remove", Spec[string, struct{}]{Object: ctr, Args: func(id string) map[string]string { return one(log.FieldContainerID, id) }, Run: r.removeContainer})
	j.Status = Register(e, "container_status", Spec[string, *runtimeapi.ContainerStatus]{Quiet: true,
		Args: func(id string) map[string]string { return one(log.FieldContainerID, id) },
		Run: func(ctx context.Context, _ *Job, id string) (*runtimeapi.ContainerStatus, error) {
			c, err := r.getContainer(id)
			if err != nil {
				return nil, err
			}
			r.refresh(ctx, c)
			return r.containerStatus(c), nil
		}})
	j.List = Register(e, "list_containers", Spec[*ContainerFilter, []*Container]{Quiet: true, Run: r.listContainers})
	j.ExecSync = Register(e, "exec_sync", Spec[ExecSyncRequest, *ExecSyncResult]{
		Args: func(q ExecSyncRequest) map[string]string {
			return map[string]string{log.FieldContainerID: q.ID, "timeout": q.Timeout.String()}
		},
		Run: r.execSync,
	})
	j.Update = Register(e, "update_resources", Spec[UpdateResourcesRequest, struct{}]{
		Object: func(q UpdateResourcesRequest) string { return ctr(q.ID) },
		Args:   func(q UpdateResourcesRequest) map[string]string { return one(log.FieldContainerID, q.ID) },
		Run:    r.updateResources,
	})
	j.ReopenLog = Register(e, "reopen_log", Spec[string, struct{}]{Object: ctr, Args: func(id string) map[string]string { return one(log.FieldContainerID, id) }, Run: r.reopenLog})
	j.UpdateNetwk = Register(e, "update_runtime_config", Spec[string, struct{}]{
		Args: func(cidr string) map[string]string { return one("pod_cidr", cidr) },
		Run: func(ctx context.Context, _ *Job, cidr string) (struct{}, error) {
			if r.o.Network == nil || cidr == "" {
				return struct{}{}, nil
			}
			return struct{}{}, r.o.Network.SetPodCIDR(ctx, cidr)
		},
	})
	return j, nil
}

// Verbose returns verbose info of a pod (the record and its containers).
func (r *Runtime) PodVerbose(id string) map[string]string {
	sb, err := r.getSandbox(id)
	if err != nil {
		return nil
	}
	v := sb.view()
	info := map[string]any{"id": v.ID, "dir": v.Dir, "netns": v.NetNS, "ipcns": v.IPCNS, "utsns": v.UTSNS, "userns": v.UserNS,
		"network": v.Network, "ips": v.IPs, "infraPid": v.InfraPid, "runtimeHandler": v.Handler,
		"createdAt": v.CreatedAt.Format(time.RFC3339Nano)}
	out := verboseInfo(info)
	sb.mu.Lock()
	tl := sb.timeline
	sb.mu.Unlock()
	if tl != nil {
		addTimeline(out, map[string]timeline.Report{"run_pod": tl.Report("run_pod")})
	}
	return out
}

// addTimeline adds the "timeline" key of verbose status: the phases of
// the jobs that made the object, by job name. They are kept in memory: an
// object a restarted daemon recovered has none.
func addTimeline(info map[string]string, reports map[string]timeline.Report) {
	if b, err := json.Marshal(reports); err == nil && info != nil {
		info["timeline"] = string(b)
	}
}

// ContainerVerbose returns verbose info of a container.
func (r *Runtime) ContainerVerbose(id string) map[string]string {
	c, err := r.getContainer(id)
	if err != nil {
		return nil
	}
	v := c.view()
	info := map[string]any{"id": v.ID, "pid": v.Pid, "bundle": v.Bundle, "snapshot": v.Snapshot,
		"sandboxId": v.SandboxID, "imageId": v.ImageID}
	out := verboseInfo(info)
	reports := map[string]timeline.Report{}
	c.mu.Lock()
	created, started := c.created, c.started
	c.mu.Unlock()
	if created != nil {
		reports["create"] = created.Report("create")
	}
	if started != nil {
		reports["start"] = started.Report("start")
	}
	if len(reports) > 0 {
		addTimeline(out, reports)
	}
	return out
}
