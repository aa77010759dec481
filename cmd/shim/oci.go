package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/shim-cri/shim/pkg/libct/ocicli"
)

// ociCommand is `shim oci`, the runc-compatible OCI runtime CLI
// (create/start/run/state/kill/delete/exec/list/pause/resume/update/
// events/ps/features; global --root, --log, --log-format, --systemd-cgroup).
// ocicli parses its arguments (flags and help included), as it does in
// the lean runtime binary that runs most `shim oci` commands, so both
// read a command line alike: urfave/cli hands them over untouched, and
// its `shim help oci` prints ocicli's help.
var ociCommand = &cli.Command{
	Name:               "oci",
	Usage:              ocicli.Command().Usage,
	SkipFlagParsing:    true,
	HideHelp:           true,
	CustomHelpTemplate: "{{" + strconv.Quote(ocicli.Help()) + "}}",
	Action: func(c *cli.Context) error {
		if code := ocicli.Run(c.Args().Slice()); code != 0 {
			os.Exit(code)
		}
		return nil
	},
}

// `shim oci` runs container inits from the embedded init binary (when
// `make build` embedded one), not from this binary, and installs the
// embedded runtime binary for the next `shim oci` command
// (internal/ocilean).
func init() {
	ocicli.SetEmbeddedInit(embeddedInit, strings.TrimSpace(embeddedInitSum))
	ocicli.SetEmbeddedRuntime(embeddedRuntime, strings.TrimSpace(embeddedRuntimeSum))
}
