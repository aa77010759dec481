// Command shim-init is the container init of shim: the binary the pod's
// monitor executes for a container's create and for an exec (the C stage
// of pkg/libct/nsenter, then libct's Go init, which execs the container's
// process). It links libct built with the shim_init tag (no cgroup
// manager) and nothing else, so that its Go runtime and package start,
// paid once per container and per exec, is as short as it can be.
// `make build` embeds it in bin/shim beside cmd/shim-runtime.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/shim-cri/shim/pkg/libct"
	_ "github.com/shim-cri/shim/pkg/libct/nsenter"
)

func main() {
	runtime.MemProfileRate = 0
	if len(os.Args) < 2 || os.Args[1] != "init" {
		fmt.Fprintln(os.Stderr, "shim-init: internal binary of shim: init")
		os.Exit(2)
	}
	libct.Init()
}
