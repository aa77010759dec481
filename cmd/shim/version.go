package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// Version is set at build time (the Makefile: -ldflags "-X
// main.Version=0.1.0-dev+<commit>"). It is what the CRI Version call
// answers, which must be semver: kubelet shows "Unknown" for anything else.
var Version = "0.1.0-dev"

// version is Version with the commit as semver build metadata when the
// build did not set it (go build, go run).
func version() string {
	v := Version
	if strings.Contains(v, "+") {
		return v
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return v
}

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the version",
	Action: func(c *cli.Context) error {
		fmt.Printf("shim %s\nCRI API: v1 (k8s.io/cri-api v0.37)\nGo: %s %s/%s\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	},
}
