package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/shim-cri/shim/pkg/monitor"
	// The C per-pod monitor: it runs before the Go runtime starts when
	// monitor.Spawn asks for it, and never returns into Go.
	_ "github.com/shim-cri/shim/pkg/monitor/cmon"
)

var monitorCommand = &cli.Command{
	Name:            "monitor",
	Hidden:          true,
	Usage:           "internal: the per-pod monitor, started by the daemon (runs in C before this command)",
	SkipFlagParsing: true,
	Action: func(c *cli.Context) error {
		return monitor.Main(c.Args().Slice())
	},
}

var monitorHelperCommand = &cli.Command{
	Name:            "monitor-helper",
	Hidden:          true,
	Usage:           "internal: one container operation for a pod's monitor",
	SkipFlagParsing: true,
	Action: func(c *cli.Context) error {
		os.Exit(monitor.HelperMain(c.Args().Slice()))
		return nil
	},
}
