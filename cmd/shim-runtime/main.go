// Command shim-runtime is the lean part of shim that runs beside every pod:
// the per-pod monitor (C, in the constructor of pkg/monitor/cmon), its
// short-lived helper, the container init, and the commands of `shim oci`,
// which the shim binary hands to it (internal/ocilean). It links only what
// those need, so each starts fast and small. `make build` embeds it in bin/shim
// (see cmd/shim/runtime_embed.go); the daemon unpacks it once into its
// state directory, so shim still ships as one file.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/shim-cri/shim/pkg/libct"
	_ "github.com/shim-cri/shim/pkg/libct/nsenter"
	"github.com/shim-cri/shim/pkg/libct/ocicli"
	"github.com/shim-cri/shim/pkg/monitor"
	_ "github.com/shim-cri/shim/pkg/monitor/cmon"
)

func main() {
	// Heap profiling is on by default in every Go program; short-lived
	// helpers and inits do not need its bookkeeping.
	runtime.MemProfileRate = 0
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "shim-runtime: internal binary of shim: monitor | monitor-helper | init | oci")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "init":
		libct.Init()
	case "oci":
		// `shim oci`, handed over by the shim binary (internal/ocilean).
		ocicli.Main()
	case "monitor-helper":
		os.Exit(monitor.HelperMain(os.Args[2:]))
	case "monitor":
		// The monitor runs in C before main; this is only reached in
		// a binary built without it.
		if err := monitor.Main(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "shim-runtime monitor:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "shim-runtime: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
