package cri

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// CreateContainer creates a container in a pod.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if err := needID("pod sandbox", req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	if req.GetConfig() == nil {
		return nil, fmt.Errorf("no container config: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.rt.Create.Run(ctx, engine.CreateContainerRequest{PodID: req.GetPodSandboxId(), Config: req.GetConfig()})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: c.ID}, nil
}

// StartContainer starts a created container.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	if _, err := s.rt.Start.Run(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

// StopContainer stops a container: stop signal, then SIGKILL after the timeout.
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	if req.GetTimeout() < 0 {
		return nil, fmt.Errorf("negative timeout %d: %w", req.GetTimeout(), errdefs.ErrInvalidArgument)
	}
	if _, err := s.rt.Stop.Run(ctx, engine.StopContainerRequest{ID: req.GetContainerId(), Timeout: time.Duration(req.GetTimeout()) * time.Second}); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// RemoveContainer removes a container; unknown containers are fine.
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	if _, err := s.rt.Remove.Run(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// ListContainers lists containers matching the filter.
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	cs, err := s.rt.List.Run(ctx, req.GetFilter())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListContainersResponse{}
	for _, c := range cs {
		resp.Containers = append(resp.Containers, s.rt.ToCRIContainer(c))
	}
	return resp, nil
}

// ContainerStatus returns a container's status.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	st, err := s.rt.Status.Run(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		resp.Info = s.rt.ContainerVerbose(st.Id)
	}
	return resp, nil
}

// UpdateContainerResources changes a container's resources.
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	if req.GetLinux() == nil {
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil
	}
	if _, err := s.rt.Update.Run(ctx, engine.UpdateResourcesRequest{ID: req.GetContainerId(), Resources: req.GetLinux()}); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog makes the monitor reopen the container's log file.
func (s *Server) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	if _, err := s.rt.ReopenLog.Run(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}

// ExecSync runs a command in a container and returns its output.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	if req.GetTimeout() < 0 {
		return nil, fmt.Errorf("negative timeout %d: %w", req.GetTimeout(), errdefs.ErrInvalidArgument)
	}
	res, err := s.rt.ExecSync.Run(ctx, engine.ExecSyncRequest{ID: req.GetContainerId(), Cmd: req.GetCmd(),
		Timeout: time.Duration(req.GetTimeout()) * time.Second})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: res.ExitCode}, nil
}

// GetContainerEvents streams container events until the client goes away.
// The response headers go out once the stream is subscribed: a client
// that waits for them misses no later event.
func (s *Server) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ch, cancel := s.rt.Events()
	defer cancel()
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
