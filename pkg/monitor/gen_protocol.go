//go:build ignore

// gen_protocol writes cmon/protocol.h from the Go definitions of the
// monitor protocol (see CHeader). Run by `go generate ./pkg/monitor`.
package main

import (
	"log"
	"os"

	"github.com/shim-cri/shim/pkg/monitor"
)

func main() {
	if err := os.WriteFile(monitor.CHeaderFile, monitor.CHeader(), 0o644); err != nil {
		log.Fatal(err)
	}
}
