package imagestore

import (
	"testing"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestParseRef(t *testing.T) {
	good := []struct{ in, want, tag string }{
		{"busybox", "docker.io/library/busybox:latest", "latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36", "1.36"},
		{"docker.io/library/busybox", "docker.io/library/busybox:latest", "latest"},
		{"registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9", "3.9"},
		{"127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b:latest", "latest"},
		{"localhost:65535/a", "localhost:65535/a:latest", "latest"},
		{"[::1]:5000/a", "[::1]:5000/a:latest", "latest"},
		{"[::1]/a", "[::1]/a:latest", "latest"},
		{"gcr.io/x/y@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf", "gcr.io/x/y@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf", ""},
		{"gcr.io/x/y:t@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf", "gcr.io/x/y@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf", ""},
	}
	for _, g := range good {
		r, err := ParseRef(g.in)
		if err != nil {
			t.Fatalf("%q: %v", g.in, err)
		}
		if r.String() != g.want || r.Tag() != g.tag {
			t.Errorf("%q: got %q tag %q, want %q tag %q", g.in, r.String(), r.Tag(), g.want, g.tag)
		}
	}
	bad := []string{"", "library/UPPER", "a b", "busybox\n", "x@sha256:zz", "busybox:\x00", ":tag",
		"localhost:99999/x", "127.0.0.1:0/x", "[::1]:70000/x", "localhost:123456789012345678901234567890/x"}
	for _, b := range bad {
		if _, err := ParseRef(b); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: want invalid argument, got %v", b, err)
		}
	}
}

func TestParseLookup(t *testing.T) {
	id := "sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"
	for in, want := range map[string]lookupKind{
		id:      lookupID,
		id[7:]:  lookupID,
		"nginx": lookupRef,
	} {
		k, _, err := parseLookup(in)
		if err != nil || k != want {
			t.Errorf("%q: got %v %v", in, k, err)
		}
	}
}
