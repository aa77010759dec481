package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/hostinfo"
)

var configCommand = &cli.Command{
	Name:  "config",
	Usage: "print the default config or check the host",
	Subcommands: []*cli.Command{
		{
			Name:  "default",
			Usage: "print the full default config, with comments",
			Action: func(c *cli.Context) error {
				fmt.Print(config.DefaultTOML())
				return nil
			},
		},
		{
			Name:  "check",
			Usage: "check the config file and report what the host supports",
			Flags: []cli.Flag{&cli.StringFlag{Name: "config", Value: config.DefaultFile}},
			Action: func(c *cli.Context) error {
				_, unknown, err := config.Load(c.String("config"), !c.IsSet("config"))
				if err != nil {
					return err
				}
				fmt.Printf("%-16s %-4s %s\n", "config", "ok", c.String("config"))
				for _, k := range unknown {
					fmt.Printf("%-16s %-4s unknown key %s\n", "config", "warn", k)
				}
				for _, ch := range hostinfo.Report() {
					st := "ok"
					if !ch.OK {
						st = "no"
					}
					fmt.Printf("%-16s %-4s %s\n", ch.Name, st, ch.Detail)
				}
				return nil
			},
		},
	},
}
