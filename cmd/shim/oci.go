package main

import (
	"strings"

	"github.com/shim-cri/shim/pkg/libct/ocicli"
)

// ociCommand is `shim oci`, the runc-compatible OCI runtime CLI
// (create/start/run/state/kill/delete/exec/list/pause/resume/update/
// events/ps/features; global --root, --log, --log-format, --systemd-cgroup).
var ociCommand = ocicli.Command()

// `shim oci` runs container inits from the embedded init binary (when
// `make build` embedded one), not from this binary, and installs the
// embedded runtime binary for the next `shim oci` command
// (internal/ocilean).
func init() {
	ocicli.SetEmbeddedInit(embeddedInit, strings.TrimSpace(embeddedInitSum))
	ocicli.SetEmbeddedRuntime(embeddedRuntime, strings.TrimSpace(embeddedRuntimeSum))
}
