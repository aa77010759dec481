// Package cri serves the CRI v1 RuntimeService and ImageService over gRPC.
// Handlers are thin: they validate the request, run it as an engine job
// and map the result; errors become gRPC codes in the interceptor.
package cri

import (
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
)

// Info is what Version and Status report about the daemon.
type Info struct {
	Version      string
	CgroupDriver runtimeapi.CgroupDriver
	// StatusInfo is extra verbose Status output (config, host checks).
	StatusInfo func() map[string]string
}

// Server implements the CRI services.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	info   Info
	engine *engine.Engine
	images *engine.Images
	rt     *engine.RuntimeJobs
	stats  *engine.StatsJobs

	streams *engine.StreamJobs // nil until SetStreams
}

// NewServer returns a CRI server running jobs on e.
func NewServer(info Info, e *engine.Engine, images *engine.Images, rt *engine.RuntimeJobs) *Server {
	return &Server{info: info, engine: e, images: images, rt: rt}
}

// Register registers both CRI services on g.
func (s *Server) Register(g *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
}
