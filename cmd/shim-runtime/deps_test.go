package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The lean binary starts once per pod (the monitor) and for each helper
// (container inits run cmd/shim-init): every package it links adds to
// each start. These must stay out; the reason is beside each.
var forbidden = []struct{ prefix, why string }{
	{"google.golang.org/grpc", "gRPC belongs to the daemon (errdefs/errgrpc), not the runtime"},
}

func TestLeanDeps(t *testing.T) {
	// go test puts its own go first in PATH.
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %q", deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f.prefix || strings.HasPrefix(d, f.prefix+"/") {
				t.Errorf("cmd/shim-runtime links %s: %s", d, f.why)
			}
		}
	}
}
