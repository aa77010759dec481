package main

import "github.com/urfave/cli/v2"

// ociCommand is the runc-compatible OCI runtime CLI (placeholder; pkg/libct work replaces it).
var ociCommand = &cli.Command{
	Name:  "oci",
	Usage: "runc-compatible OCI runtime CLI",
	Action: func(c *cli.Context) error {
		return cli.Exit("shim oci: not implemented yet", 1)
	},
}
