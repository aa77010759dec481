package main

import (
	"testing"

	"github.com/shim-cri/shim/internal/depcheck"
)

// The init binary starts once per container create and per exec: these
// must stay out of it; the reason is beside each.
func TestLeanDeps(t *testing.T) {
	depcheck.Forbid(t, "shim_init", []depcheck.Rule{
		{Prefix: "github.com/opencontainers/cgroups", Why: "the parent puts the init in its cgroup; libct's managers are not built with shim_init"},
		{Prefix: "github.com/containerd/cgroups", Why: "a cgroup manager (and its protobuf stats)"},
		{Prefix: "google.golang.org/protobuf", Why: "no message the init reads is protobuf"},
		{Prefix: "github.com/cilium/ebpf", Why: "no eBPF in the init"},
		{Prefix: "github.com/godbus/dbus", Why: "pulled in by the cgroups library (systemd)"},
		{Prefix: "google.golang.org/grpc", Why: "gRPC belongs to the daemon"},
		{Prefix: "github.com/shim-cri/shim/pkg/monitor", Why: "the monitor and its helper are cmd/shim-runtime"},
	})
}
