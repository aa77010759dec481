package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The init binary starts once per container create and per exec: every
// package it links adds its initialisation to each. These must stay out;
// the reason is beside each.
var forbidden = []struct{ prefix, why string }{
	{"github.com/containerd/cgroups", "the parent puts the init in its cgroup; libct's managers are not built with shim_init"},
	{"google.golang.org/protobuf", "pulled in by the cgroups library's stats"},
	{"github.com/cilium/ebpf", "pulled in by the cgroups library (v2 device filters)"},
	{"github.com/godbus/dbus", "pulled in by the cgroups library (systemd)"},
	{"google.golang.org/grpc", "gRPC belongs to the daemon"},
	{"github.com/shim-cri/shim/pkg/monitor", "the monitor and its helper are cmd/shim-runtime"},
}

func TestLeanDeps(t *testing.T) {
	// go test puts its own go first in PATH.
	out, err := exec.Command("go", "list", "-tags", "shim_init", "-deps", ".").Output()
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
				t.Errorf("cmd/shim-init links %s: %s", d, f.why)
			}
		}
	}
}
