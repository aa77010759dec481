// Package ocilean hands `shim oci` commands from the shim binary to the
// lean runtime binary it embeds (cmd/shim-runtime), before the big
// binary's Go runtime and package initialisation start (about 30 ms of
// each command here: the registry, gRPC, CRI and Prometheus packages a
// runc-compatible CLI does not need).
//
// Only the shim binary built by `make build` imports it: its C
// constructor runs when argv is `shim oci <global flags> <subcommand>`,
// finds <root>/.bin/shim-runtime-<sum> and shim-init-<sum> (written by
// the first `shim oci` command the big binary ran itself, ocicli's
// installLean; the sums and sizes are those of the binaries `make
// runtime` embedded, from embedded.h, which it writes), checks that the
// directory and both files are the user's and writable by no one else and
// that the files have the embedded sizes, and executes the runtime binary
// it checked (execveat of the file it opened) with the same arguments and
// the init's path in ocicli.LeanInitEnv. In
// any other case (no embedded.h, a flag it does not know, --help, nothing
// installed, an exec failure) it returns and the big binary runs the
// command as before.
package ocilean

// #include "ocilean.h"
import "C"
