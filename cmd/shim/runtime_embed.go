//go:build shim_embed

package main

import (
	_ "embed"

	// Hands `shim oci` to the lean runtime binary (installed by
	// pkg/libct/ocicli) before this binary's Go start.
	_ "github.com/shim-cri/shim/internal/ocilean"
)

// embeddedRuntime is bin/shim-runtime, embedded by `make build`.
//
//go:embed shim-runtime.bin
var embeddedRuntime []byte

// embeddedInit is bin/shim-init, the container init, embedded by `make
// build`.
//
//go:embed shim-init.bin
var embeddedInit []byte

// embeddedInitSum names it: the start of its SHA-256, made by `make build`.
//
//go:embed shim-init.sum
var embeddedInitSum string

// embeddedRuntimeSum names the runtime binary for `shim oci`.
//
//go:embed shim-runtime.sum
var embeddedRuntimeSum string
