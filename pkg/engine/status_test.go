package engine

import (
	"testing"

	"github.com/opencontainers/go-digest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/imagestore"
)

// TestStatusImageName: what the container status names as its image for
// what kubelet (and crictl) send in CreateContainer.
func TestStatusImageName(t *testing.T) {
	id := digest.FromString("config")
	tagged := &imagestore.Image{ID: id, RepoTags: []string{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "docker.io/library/busybox:latest"}}
	untagged := &imagestore.Image{ID: id}
	for _, tc := range []struct {
		name string
		spec *runtimeapi.ImageSpec
		img  *imagestore.Image
		want string
	}{
		// kubelet: Image is the image ID, UserSpecifiedImage the pod's.
		{"kubelet", &runtimeapi.ImageSpec{Image: id.String(), UserSpecifiedImage: "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"},
			tagged, "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"},
		// An ID alone (older clients): a tag of that image.
		{"id", &runtimeapi.ImageSpec{Image: id.String()}, tagged, "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
		{"bare id", &runtimeapi.ImageSpec{Image: id.Encoded()}, tagged, "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
		{"id, no tags", &runtimeapi.ImageSpec{Image: id.String()}, untagged, id.String()},
		// crictl: the name as given.
		{"name", &runtimeapi.ImageSpec{Image: "busybox"}, tagged, "busybox"},
	} {
		if got := statusImageName(tc.spec, tc.img); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
