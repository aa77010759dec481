package main

import (
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/urfave/cli/v2"
)

// initCommand is the container init: pkg/libct re-executes a sealed copy
// of this binary as "shim init" (after the C stage in pkg/libct/nsenter has
// set up the namespaces). It never returns on success.
var initCommand = &cli.Command{
	Name:   "init",
	Hidden: true,
	Usage:  "internal: container init (started by pkg/libct)",
	Action: func(c *cli.Context) error {
		libct.Init()
		return nil
	},
}
