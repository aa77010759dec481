package main

import (
	"github.com/urfave/cli/v2"

	"github.com/shim-cri/shim/pkg/libct"
)

// initCommand is the hidden container init that pkg/libct re-executes
// (as "<binary> init"); it never returns on success.
var initCommand = &cli.Command{
	Name:   "init",
	Hidden: true,
	Usage:  "internal: container init (started by pkg/libct)",
	Action: func(*cli.Context) error {
		libct.Init()
		return nil
	},
}
