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
		{Prefix: "google.golang.org/protobuf", Why: "its package initialisation is about 1 ms of every start here (containerd's cgroups library brought it, with its stats)"},
		{Prefix: "net/http", Why: "its initialisation, with crypto/tls', is about 3 ms of every start here (easyjson's root package imports it: specjson declares its two interfaces instead)"},
		{Prefix: "github.com/cilium/ebpf", Why: "its package initialisation (BTF, features) is about 1 ms of every start here; the cgroups library loads its v2 device program without it"},
		{Prefix: "github.com/urfave/cli", Why: "with its text/template, regexp and reflection-heavy flag set-up, about 1 ms of every `shim oci` start here: internal/cmdline parses its command line"},
		{Prefix: "text/template", Why: "parsing templates at start (urfave/cli's help) is part of the 1 ms urfave/cli cost here"},
		{Prefix: "regexp", Why: "package-level regexps compile at start (urfave/cli's were part of its 1 ms here)"},
	})
}
