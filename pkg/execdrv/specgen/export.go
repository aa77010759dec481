package specgen

import (
	"context"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Resources converts CRI container resources (UpdateContainerResources)
// to OCI resources, validated as ContainerSpec does.
func Resources(ctx context.Context, r *runtimeapi.LinuxContainerResources, o Options) (*specs.LinuxResources, error) {
	return resources(ctx, r, o)
}
