package main

import (
	"testing"

	k8sversion "k8s.io/apimachinery/pkg/util/version"
)

// kubelet parses the CRI RuntimeVersion as semver and reports "Unknown"
// for the node's runtime otherwise.
func TestVersionIsSemver(t *testing.T) {
	for _, v := range []string{Version, version(), "0.1.0-dev+5c107fb12345.dirty"} {
		if _, err := k8sversion.ParseSemantic(v); err != nil {
			t.Errorf("version %q: %v", v, err)
		}
	}
}
