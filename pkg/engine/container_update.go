package engine

// Container update and logs: a container's resources change in place; its
// CRI log is reopened after kubelet rotated it.

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/monitor"
)

// UpdateResourcesRequest changes a container's resources.
type UpdateResourcesRequest struct {
	ID        string
	Resources *runtimeapi.LinuxContainerResources
}

func (r *Runtime) updateResources(ctx context.Context, j *Job, req UpdateResourcesRequest) (struct{}, error) {
	c, err := r.getContainer(req.ID)
	if err != nil {
		return struct{}{}, err
	}
	res, err := specgen.Resources(ctx, req.Resources, r.o.Spec)
	if err != nil {
		return struct{}{}, err
	}
	r.refresh(ctx, c)
	if st := c.view().State; st == ContainerRunning || st == ContainerCreated {
		mon, err := r.monitorOf(c)
		if err != nil {
			return struct{}{}, err
		}
		if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpUpdate, ID: c.ID, Resources: res}); err != nil {
			return struct{}{}, err
		}
	}
	pb, err := proto.Marshal(req.Resources)
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.updateContainer(c, func(c *Container) { c.ResourcesPB = pb })
}

func (r *Runtime) reopenLog(ctx context.Context, j *Job, id string) (struct{}, error) {
	c, err := r.getContainer(id)
	if err != nil {
		return struct{}{}, err
	}
	r.refresh(ctx, c)
	if c.view().State != ContainerRunning {
		return struct{}{}, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	mon, err := r.monitorOf(c)
	if err != nil {
		return struct{}{}, err
	}
	_, err = mon.Call(ctx, &monitor.Request{Op: monitor.OpReopenLog, ID: c.ID})
	return struct{}{}, err
}
