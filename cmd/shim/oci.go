package main

import "github.com/shim-cri/shim/pkg/libct/ocicli"

// ociCommand is `shim oci`, the runc-compatible OCI runtime CLI
// (create/start/run/state/kill/delete/exec/list/pause/resume/update/
// events/ps/features; global --root, --log, --log-format, --systemd-cgroup).
var ociCommand = ocicli.Command()
