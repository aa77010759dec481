package engine

import (
	"context"
	"encoding/json"
	"sort"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var criState = map[string]runtimeapi.ContainerState{
	ContainerCreated: runtimeapi.ContainerState_CONTAINER_CREATED,
	ContainerRunning: runtimeapi.ContainerState_CONTAINER_RUNNING,
	ContainerExited:  runtimeapi.ContainerState_CONTAINER_EXITED,
	ContainerUnknown: runtimeapi.ContainerState_CONTAINER_UNKNOWN,
}

func nanos(t interface{ UnixNano() int64 }, zero bool) int64 {
	if zero {
		return 0
	}
	return t.UnixNano()
}

// containerStatus renders the CRI status of a container.
func (r *Runtime) containerStatus(c *Container) *runtimeapi.ContainerStatus {
	v := c.view()
	cfg := v.config
	st := &runtimeapi.ContainerStatus{
		Id:          v.ID,
		Metadata:    cfg.GetMetadata(),
		State:       criState[v.State],
		CreatedAt:   v.CreatedAt.UnixNano(),
		StartedAt:   nanos(v.StartedAt, v.StartedAt.IsZero()),
		FinishedAt:  nanos(v.FinishedAt, v.FinishedAt.IsZero()),
		ExitCode:    v.ExitCode,
		Image:       &runtimeapi.ImageSpec{Image: v.ImageName, Annotations: cfg.GetImage().GetAnnotations()},
		ImageRef:    v.ImageRef,
		ImageId:     v.ImageID,
		Reason:      v.Reason,
		Message:     v.Message,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Mounts:      statusMounts(cfg.GetMounts(), v.ImageVolumes),
		LogPath:     v.LogPath,
	}
	res := cfg.GetLinux().GetResources()
	if len(v.ResourcesPB) > 0 {
		res = &runtimeapi.LinuxContainerResources{}
		proto.Unmarshal(v.ResourcesPB, res)
	}
	if res != nil {
		st.Resources = &runtimeapi.ContainerResources{Linux: res}
	}
	if v.UID != nil {
		st.User = &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{
			Uid: *v.UID, Gid: *v.GID, SupplementalGroups: v.Groups,
		}}
	}
	return st
}

// verboseInfo is the extra info of verbose status calls.
func verboseInfo(v any) map[string]string {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return map[string]string{"info": string(b)}
}

// ContainerFilter selects containers in ListContainers.
type ContainerFilter = runtimeapi.ContainerFilter

func (r *Runtime) listContainers(ctx context.Context, _ *Job, f *ContainerFilter) ([]*Container, error) {
	r.mu.RLock()
	var all []*Container
	for _, c := range r.containers {
		if !c.Infra {
			all = append(all, c)
		}
	}
	var wantID, wantPod string
	if f.GetId() != "" {
		wantID, _ = resolve(r.containers, f.GetId())
		if wantID == "" {
			wantID = "\x00none"
		}
	}
	if f.GetPodSandboxId() != "" {
		wantPod, _ = resolve(r.sandboxes, f.GetPodSandboxId())
		if wantPod == "" {
			wantPod = "\x00none"
		}
	}
	r.mu.RUnlock()
	var out []*Container
	for _, c := range all {
		if wantID != "" && c.ID != wantID || wantPod != "" && c.SandboxID != wantPod {
			continue
		}
		r.refresh(ctx, c)
		v := c.view()
		if st := f.GetState(); st != nil && st.GetState() != criState[v.State] {
			continue
		}
		if !labelsMatch(v.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// ToCRIContainer renders a container for ListContainers.
func (r *Runtime) ToCRIContainer(c *Container) *runtimeapi.Container {
	v := c.view()
	cfg := v.config
	return &runtimeapi.Container{
		Id:           v.ID,
		PodSandboxId: v.SandboxID,
		Metadata:     cfg.GetMetadata(),
		Image:        &runtimeapi.ImageSpec{Image: v.ImageName, Annotations: cfg.GetImage().GetAnnotations()},
		ImageRef:     v.ImageRef,
		ImageId:      v.ImageID,
		State:        criState[v.State],
		CreatedAt:    v.CreatedAt.UnixNano(),
		Labels:       cfg.GetLabels(),
		Annotations:  cfg.GetAnnotations(),
	}
}

// ToCRISandbox renders a pod for ListPodSandbox.
func (r *Runtime) ToCRISandbox(sb *Sandbox) *runtimeapi.PodSandbox {
	v := sb.view()
	state := runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	if v.State == SandboxReady {
		state = runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return &runtimeapi.PodSandbox{
		Id:             v.ID,
		Metadata:       v.config.GetMetadata(),
		State:          state,
		CreatedAt:      v.CreatedAt.UnixNano(),
		Labels:         v.config.GetLabels(),
		Annotations:    v.config.GetAnnotations(),
		RuntimeHandler: v.Handler,
	}
}

// statusMounts reports the config's mounts, with the image id of image
// volumes in Image.ImageRef.
func statusMounts(ms []*runtimeapi.Mount, vols []ImageVolume) []*runtimeapi.Mount {
	if len(vols) == 0 {
		return ms
	}
	out := make([]*runtimeapi.Mount, len(ms))
	for i, m := range ms {
		out[i] = m
		for _, v := range vols {
			if v.Path == m.GetContainerPath() && m.GetImage() != nil {
				c := proto.Clone(m).(*runtimeapi.Mount)
				c.Image.ImageRef = v.ImageID
				out[i] = c
			}
		}
	}
	return out
}
