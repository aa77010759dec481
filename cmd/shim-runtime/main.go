// Command shim-runtime is the lean part of shim that runs beside every pod:
// the per-pod monitor and the container init. It links only what those
// need, so each monitor and each container init starts fast and small.
// `make build` embeds it in bin/shim (see cmd/shim/runtime_embed.go); the
// daemon runs it from a sealed memfd, so shim still ships as one file.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/shim-cri/shim/pkg/libct"
	_ "github.com/shim-cri/shim/pkg/libct/nsenter"
	"github.com/shim-cri/shim/pkg/monitor"
	_ "github.com/shim-cri/shim/pkg/monitor/daemonize"
)

func main() {
	// Heap profiling is on by default in every Go program; a monitor per
	// pod cannot afford its bookkeeping.
	runtime.MemProfileRate = 0
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "shim-runtime: internal binary of shim: monitor | init")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "init":
		libct.Init()
	case "monitor":
		if err := monitor.Main(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "shim-runtime monitor:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "shim-runtime: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
