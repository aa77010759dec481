package cri

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// WithStats serves the stats, metrics and pod resources RPCs from st.
func (s *Server) WithStats(st *engine.StatsJobs) *Server {
	s.stats = st
	return s
}

var errNoStats = fmt.Errorf("stats are not served: %w", errdefs.ErrNotImplemented)

// ContainerStats returns one container's stats.
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	if s.stats == nil {
		return nil, errNoStats
	}
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	st, err := s.stats.Container.Run(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

// ListContainerStats returns the stats of the containers the filter selects.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	if s.stats == nil {
		return nil, errNoStats
	}
	st, err := s.stats.ListContainers.Run(ctx, req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: st}, nil
}

// StreamContainerStats is ListContainerStats in chunks.
func (s *Server) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream runtimeapi.RuntimeService_StreamContainerStatsServer) error {
	if s.stats == nil {
		return errNoStats
	}
	st, err := s.stats.ListContainers.Run(stream.Context(), req.GetFilter())
	if err != nil {
		return err
	}
	return sendChunks(st, func(c []*runtimeapi.ContainerStats) error {
		return stream.Send(&runtimeapi.StreamContainerStatsResponse{ContainerStats: c})
	})
}

// PodSandboxStats returns one pod's stats.
func (s *Server) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	if s.stats == nil {
		return nil, errNoStats
	}
	if err := needID("pod sandbox", req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	st, err := s.stats.Pod.Run(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: st}, nil
}

// ListPodSandboxStats returns the stats of the pods the filter selects.
func (s *Server) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	if s.stats == nil {
		return nil, errNoStats
	}
	st, err := s.stats.ListPods.Run(ctx, req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: st}, nil
}

// StreamPodSandboxStats is ListPodSandboxStats in chunks.
func (s *Server) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxStatsServer) error {
	if s.stats == nil {
		return errNoStats
	}
	st, err := s.stats.ListPods.Run(stream.Context(), req.GetFilter())
	if err != nil {
		return err
	}
	return sendChunks(st, func(c []*runtimeapi.PodSandboxStats) error {
		return stream.Send(&runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: c})
	})
}

// ListMetricDescriptors lists the metric families ListPodSandboxMetrics
// reports (fixed for the daemon's life).
func (s *Server) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	if s.stats == nil {
		return nil, errNoStats
	}
	d, err := s.stats.MetricDescriptors.Run(ctx, struct{}{})
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: d}, nil
}

// ListPodSandboxMetrics returns every pod's and container's metrics.
func (s *Server) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	m, err := s.podMetrics(ctx)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: m}, nil
}

// StreamPodSandboxMetrics is ListPodSandboxMetrics in chunks.
func (s *Server) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxMetricsServer) error {
	m, err := s.podMetrics(stream.Context())
	if err != nil {
		return err
	}
	return sendChunks(m, func(c []*runtimeapi.PodSandboxMetrics) error {
		return stream.Send(&runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: c})
	})
}

func (s *Server) podMetrics(ctx context.Context) ([]*runtimeapi.PodSandboxMetrics, error) {
	if s.stats == nil {
		return nil, errNoStats
	}
	pods, err := s.stats.PodMetrics.Run(ctx, struct{}{})
	if err != nil {
		return nil, err
	}
	out := make([]*runtimeapi.PodSandboxMetrics, len(pods))
	for i, p := range pods {
		out[i] = p.CRI()
	}
	return out, nil
}

// UpdatePodSandboxResources applies kubelet's pod-level resources (on an
// in-place resize) to the pod's cgroup.
func (s *Server) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	if s.stats == nil {
		return nil, errNoStats
	}
	if err := needID("pod sandbox", req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	if _, err := s.stats.UpdatePodResources.Run(ctx, engine.UpdatePodResourcesRequest{PodID: req.GetPodSandboxId(),
		Overhead: req.GetOverhead(), Resources: req.GetResources()}); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}
