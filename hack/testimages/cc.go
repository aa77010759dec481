package main

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/shim-cri/shim/pkg/errdefs"
)

//go:embed c/*.c
var cSources embed.FS

// compileC builds every program in c/ with `gcc -static -O2 -s` and returns
// the binaries by program name (file name without .c). The sources are
// compiled from a temporary directory under their bare names and stripped,
// so no path of this machine ends up in the binaries.
func compileC(ctx context.Context, cc string) (map[string][]byte, error) {
	ents, err := cSources.ReadDir("c")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "shim-testimages-cc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	bins := map[string][]byte{}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".c") {
			continue
		}
		src, err := cSources.ReadFile("c/" + name)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), src, 0o644); err != nil {
			return nil, err
		}
		prog := strings.TrimSuffix(name, ".c")
		cmd := exec.CommandContext(ctx, cc, "-static", "-O2", "-s", "-Wall", "-o", prog, name)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s %s: %w: %s", cc, name, err, bytes.TrimSpace(out))
		}
		if bins[prog], err = os.ReadFile(filepath.Join(dir, prog)); err != nil {
			return nil, err
		}
	}
	if len(bins) == 0 {
		return nil, fmt.Errorf("no C sources embedded: %w", errdefs.ErrNotFound)
	}
	return bins, nil
}
