//go:build ignore

// gen_cplan writes the C init's generated header (see CPlanHeader). Run by
// `go generate ./pkg/libct`.
package main

import (
	"log"
	"os"

	"github.com/shim-cri/shim/pkg/libct"
)

func main() {
	if err := os.WriteFile(libct.CPlanHeaderFile, libct.CPlanHeader(), 0o644); err != nil {
		log.Fatal(err)
	}
}
