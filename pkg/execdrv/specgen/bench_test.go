package specgen

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkContainerSpec measures the spec of a typical container (default
// seccomp profile, user lookup in the image, pod files, one volume).
func BenchmarkContainerSpec(b *testing.B) {
	p := testPod()
	c := testContainer(b)
	c.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: b.TempDir()}}
	sc(&c).RunAsUser = iv(1000)
	o := Options{SeccompDefault: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ContainerSpec(bg, p, c, o); err != nil {
			b.Fatal(err)
		}
	}
}
