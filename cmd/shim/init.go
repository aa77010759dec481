package main

import "github.com/urfave/cli/v2"

// initCommand is the container init, re-executed by pkg/libct (placeholder).
var initCommand = &cli.Command{
	Name:   "init",
	Hidden: true,
	Action: func(c *cli.Context) error {
		return cli.Exit("shim init: not implemented yet", 1)
	},
}
