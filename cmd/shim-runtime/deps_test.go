package main

import (
	"testing"

	"github.com/shim-cri/shim/internal/depcheck"
)

// The lean binary starts once per pod (the monitor) and for each helper
// (container inits run cmd/shim-init): these must stay out of it; the
// reason is beside each.
func TestLeanDeps(t *testing.T) {
	depcheck.Forbid(t, "", []depcheck.Rule{
		{Prefix: "google.golang.org/grpc", Why: "gRPC belongs to the daemon (errdefs/errgrpc), not the runtime"},
	})
}
