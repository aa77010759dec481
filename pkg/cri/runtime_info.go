package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Runtime name and CRI API version reported by Version.
const (
	RuntimeName       = "shim"
	RuntimeAPIVersion = "v1"
	kubeAPIVersion    = "0.1.0"
)

// Version reports the runtime name and versions.
func (s *Server) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           kubeAPIVersion,
		RuntimeName:       RuntimeName,
		RuntimeVersion:    s.info.Version,
		RuntimeApiVersion: RuntimeAPIVersion,
	}, nil
}

// Status reports runtime and network readiness.
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	netReady, reason, msg := false, "NetworkPluginNotReady", "pod networking is not available"
	if s.rt != nil {
		netReady, reason, msg = s.rt.NetworkReady(ctx)
	}
	netCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: netReady}
	if !netReady {
		netCond.Reason, netCond.Message = reason, msg
	}
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true},
		netCond,
	}}, RuntimeHandlers: s.runtimeHandlers(), Features: s.runtimeFeatures()}
	if req.GetVerbose() && s.info.StatusInfo != nil {
		resp.Info = s.info.StatusInfo()
	}
	return resp, nil
}

// RuntimeConfig reports the cgroup driver kubelet must use.
func (s *Server) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{
		CgroupDriver: s.info.CgroupDriver,
	}}, nil
}
