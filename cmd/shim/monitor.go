package main

import (
	"github.com/urfave/cli/v2"

	"github.com/shim-cri/shim/pkg/monitor"
	// Forks before the Go runtime starts when the daemon asks, so a
	// monitor is never the daemon's child.
	_ "github.com/shim-cri/shim/pkg/monitor/daemonize"
)

var monitorCommand = &cli.Command{
	Name:            "monitor",
	Hidden:          true,
	Usage:           "internal: the per-pod monitor, started by the daemon",
	SkipFlagParsing: true,
	Action: func(c *cli.Context) error {
		return monitor.Main(c.Args().Slice())
	},
}
