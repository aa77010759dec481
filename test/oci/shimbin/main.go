// Command shimbin is a minimal binary with the `oci` and `init` commands of
// shim, for testing and benchmarking `shim oci` independently of the rest
// of the daemon.
package main

import "github.com/shim-cri/shim/pkg/libct/ocicli"

func main() { ocicli.Main() }
