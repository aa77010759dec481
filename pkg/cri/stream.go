package cri

import (
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxChunkBytes bounds one streamed message well below kubelet's 16 MiB
// receive limit.
const maxChunkBytes = 4 << 20

// sendChunks sends items in order, each exactly once, in messages of at
// least one and at most streamChunk items and (past the first item) about
// maxChunkBytes. No items, no message: the stream ends with EOF when the
// handler returns.
func sendChunks[T proto.Message](items []T, send func([]T) error) error {
	for len(items) > 0 {
		n, size := 0, 0
		for n < len(items) && n < streamChunk {
			sz := proto.Size(items[n])
			if n > 0 && size+sz > maxChunkBytes {
				break
			}
			size += sz
			n++
		}
		if err := send(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// StreamPodSandboxes is ListPodSandbox in chunks (kubelet's
// CRIListStreaming).
func (s *Server) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream runtimeapi.RuntimeService_StreamPodSandboxesServer) error {
	sbs, err := s.rt.ListPods.Run(stream.Context(), req.GetFilter())
	if err != nil {
		return err
	}
	items := make([]*runtimeapi.PodSandbox, len(sbs))
	for i, sb := range sbs {
		items[i] = s.rt.ToCRISandbox(sb)
	}
	return sendChunks(items, func(c []*runtimeapi.PodSandbox) error {
		return stream.Send(&runtimeapi.StreamPodSandboxesResponse{PodSandboxes: c})
	})
}

// StreamContainers is ListContainers in chunks.
func (s *Server) StreamContainers(req *runtimeapi.StreamContainersRequest, stream runtimeapi.RuntimeService_StreamContainersServer) error {
	cs, err := s.rt.List.Run(stream.Context(), req.GetFilter())
	if err != nil {
		return err
	}
	items := make([]*runtimeapi.Container, len(cs))
	for i, c := range cs {
		items[i] = s.rt.ToCRIContainer(c)
	}
	return sendChunks(items, func(c []*runtimeapi.Container) error {
		return stream.Send(&runtimeapi.StreamContainersResponse{Containers: c})
	})
}
