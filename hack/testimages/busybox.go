package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// Why not /bin/busybox from busybox-static: Debian builds that one with
// FEATURE_SH_STANDALONE, so its shell runs applets in-process instead of
// executing /bin/<applet>. critest masks /bin/ls (MaskedPaths) and expects
// `sh -c ls` to fail with "/bin/sh: ls: Permission denied"; a standalone
// shell would run its built-in ls and pass no matter what the runtime did.
// Debian's dynamically linked busybox (package "busybox", same source and
// version) is built without it, so we take that binary, fetched with
// `apt-get download` (it cannot be installed next to busybox-static), plus
// the C library it links against.

// busyboxPackage is the Debian package whose /bin/busybox we use.
const busyboxPackage = "busybox"

// findBusybox returns a busybox binary for the images. explicit, if set, is
// used as is. Otherwise the Debian package is downloaded once into cacheDir.
func findBusybox(ctx context.Context, explicit, cacheDir string) (string, error) {
	bb := explicit
	if bb == "" {
		var err error
		if bb, err = cachedBusybox(ctx, cacheDir); err != nil {
			return "", err
		}
	}
	standalone, err := shellIsStandalone(ctx, bb)
	if err != nil {
		return "", err
	}
	if standalone {
		if explicit == "" {
			return "", fmt.Errorf("%s: shell runs applets without exec (FEATURE_SH_STANDALONE): %w", bb, errdefs.ErrFailedPrecondition)
		}
		log.G(ctx).Warnf("%s runs applets inside its shell (FEATURE_SH_STANDALONE): critest's MaskedPaths test will fail with this image", bb)
	}
	return bb, nil
}

func cachedBusybox(ctx context.Context, cacheDir string) (string, error) {
	return cachedDebFile(ctx, cacheDir, busyboxPackage, "bin/busybox")
}

// cachedDebFile returns file (a path inside the package) of the Debian
// package pkg, downloaded once with `apt-get download` into
// cacheDir/<pkg>-deb and unpacked there; the package is not installed.
func cachedDebFile(ctx context.Context, cacheDir, pkg, file string) (string, error) {
	dir := filepath.Join(cacheDir, pkg+"-deb")
	bin := filepath.Join(dir, "root", file)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("%s cache: %w", pkg, err)
	}
	debs, err := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if err != nil {
		return "", err
	}
	if len(debs) == 0 {
		log.G(ctx).Infof("downloading Debian package %s into %s", pkg, dir)
		cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
		}
		if debs, err = filepath.Glob(filepath.Join(dir, pkg+"_*.deb")); err != nil {
			return "", err
		}
		if len(debs) == 0 {
			return "", fmt.Errorf("apt-get download %s left no .deb in %s: %w", pkg, dir, errdefs.ErrNotFound)
		}
	}
	sort.Strings(debs)
	deb := debs[len(debs)-1]
	tmp, err := os.MkdirTemp(dir, "extract-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, bytes.TrimSpace(out))
	}
	if _, err := os.Stat(filepath.Join(tmp, file)); err != nil {
		return "", fmt.Errorf("%s has no %s: %w", deb, file, errdefs.ErrNotFound)
	}
	if err := os.RemoveAll(filepath.Join(dir, "root")); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "root")); err != nil {
		return "", fmt.Errorf("%s cache: %w", pkg, err)
	}
	return bin, nil
}

// shellIsStandalone reports whether bb's shell finds applets without PATH.
func shellIsStandalone(ctx context.Context, bb string) (bool, error) {
	cmd := exec.CommandContext(ctx, bb, "sh", "-c", "ls / >/dev/null")
	cmd.Env = []string{"PATH=/nonexistent"}
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return false, nil
		}
		return false, fmt.Errorf("run %s: %w", bb, err)
	}
	return true, nil
}

// busyboxApplets lists the applets bb was built with.
func busyboxApplets(ctx context.Context, bb string) ([]string, error) {
	out, err := exec.CommandContext(ctx, bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bb, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a == "" || strings.Contains(a, "/") {
			continue
		}
		applets = append(applets, a)
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s lists no applets: %w", bb, errdefs.ErrNotFound)
	}
	return applets, nil
}
