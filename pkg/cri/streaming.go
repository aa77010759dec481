package cri

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// SetStreams enables Exec, Attach and PortForward: their jobs return URLs
// of the streaming server (pkg/streamsrv).
func (s *Server) SetStreams(j *engine.StreamJobs) { s.streams = j }

// Exec returns the URL of a streaming exec session.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if err := s.streamsReady(); err != nil {
		return nil, err
	}
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.streams.Exec.Run(ctx, req)
}

// Attach returns the URL of a streaming attach session.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := s.streamsReady(); err != nil {
		return nil, err
	}
	if err := needID("container", req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.streams.Attach.Run(ctx, req)
}

// PortForward returns the URL of a streaming port-forward session.
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if err := s.streamsReady(); err != nil {
		return nil, err
	}
	if err := needID("pod sandbox", req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	for _, p := range req.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("port %d: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return s.streams.PortForward.Run(ctx, req)
}

func (s *Server) streamsReady() error {
	if s.streams == nil {
		return fmt.Errorf("the streaming server is not running: %w", errdefs.ErrUnavailable)
	}
	return nil
}
