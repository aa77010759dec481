package cri

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
)

func needID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("empty %s id: %w", kind, errdefs.ErrInvalidArgument)
	}
	return nil
}

// RunPodSandbox creates and starts a pod sandbox.
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	if req.GetConfig() == nil {
		return nil, fmt.Errorf("no pod sandbox config: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := s.rt.RunPod.Run(ctx, engine.RunPodRequest{Config: req.GetConfig(), Handler: req.GetRuntimeHandler()})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: sb.ID}, nil
}

// StopPodSandbox stops a pod; unknown and stopped pods are fine.
func (s *Server) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	if err := needID("pod sandbox", req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	if _, err := s.rt.StopPod.Run(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox removes a pod and its containers; unknown pods are fine.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	if err := needID("pod sandbox", req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	if _, err := s.rt.RemovePod.Run(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// PodSandboxStatus returns a pod's status.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	if err := needID("pod sandbox", req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	st, err := s.rt.PodStatus.Run(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
	if req.GetVerbose() {
		resp.Info = s.rt.PodVerbose(st.Id)
	}
	return resp, nil
}

// ListPodSandbox lists pods matching the filter.
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	sbs, err := s.rt.ListPods.Run(ctx, req.GetFilter())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, sb := range sbs {
		resp.Items = append(resp.Items, s.rt.ToCRISandbox(sb))
	}
	return resp, nil
}

// UpdateRuntimeConfig takes the pod CIDR for the bridge network.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	if _, err := s.rt.UpdateNetwk.Run(ctx, req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
