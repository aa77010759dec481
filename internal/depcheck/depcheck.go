// Package depcheck is for the tests of the lean binaries (cmd/shim-runtime,
// cmd/shim-init): each starts often, and every package it links adds its
// initialisation to each start.
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// Rule is a package (and those under it) a binary must not link, and why.
type Rule struct{ Prefix, Why string }

// Forbid fails t when the package in the current directory, built with
// tags, links a package a rule names.
func Forbid(t *testing.T, tags string, rules []Rule) {
	t.Helper()
	// go test puts its own go first in PATH.
	out, err := exec.Command("go", "list", "-tags", tags, "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %q", deps)
	}
	for _, d := range deps {
		for _, r := range rules {
			if d == r.Prefix || strings.HasPrefix(d, r.Prefix+"/") {
				t.Errorf("links %s: %s", d, r.Why)
			}
		}
	}
}
