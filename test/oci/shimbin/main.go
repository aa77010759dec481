// Command shimbin is a minimal binary with the `oci` and `init` commands of
// shim, for testing and benchmarking `shim oci` independently of the rest
// of the daemon.
package main

import (
	"fmt"
	"os"

	"github.com/shim-cri/shim/pkg/libct/ocicli"
	"github.com/urfave/cli/v2"
)

func main() {
	app := &cli.App{
		Name:     "shim",
		Usage:    "shim oci (test build)",
		Commands: []*cli.Command{ocicli.Command(), ocicli.InitCommand()},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		os.Exit(1)
	}
}
