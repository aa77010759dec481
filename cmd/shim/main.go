// Command shim is a Kubernetes CRI container runtime: the daemon, the
// container init, the monitor and a runc-compatible OCI runtime in one binary.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := &cli.App{
		Name:    "shim",
		Usage:   "Kubernetes CRI container runtime",
		Version: version(),
		Commands: []*cli.Command{
			serveCommand, versionCommand, configCommand, jobsCommand, ociCommand, initCommand, monitorCommand, monitorHelperCommand,
		},
		// `shim` alone is `shim serve`.
		DefaultCommand: "serve",
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		os.Exit(1)
	}
}
