//go:build !shim_embed

package main

// embeddedRuntime is empty in a plain `go build`: monitors and container
// inits then run this binary itself (bigger and slower to start).
var embeddedRuntime []byte

// embeddedInit is empty too: container inits run the monitor's binary.
var embeddedInit []byte

// embeddedInitSum and embeddedRuntimeSum are empty with them.
var embeddedInitSum, embeddedRuntimeSum string
