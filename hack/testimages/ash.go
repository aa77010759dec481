package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// The node e2e suite's busybox:1.37.0-2 needs the shell of upstream busybox
// 1.37, and neither shell this machine has as a package will do:
//
//   - Kubelet passes ConfigMap and Secret keys through EnvFrom as
//     environment names that are not shell names ("data-1", "$_-data-1"),
//     and the "consumable via the environment" specs run `sh -c env` and
//     look for them. Upstream ash 1.37 keeps such variables and passes them
//     on; Debian's ash (1.35 in bookworm, and its 1.37 too) drops them on
//     start, as dash does.
//   - The [Conformance] spec "should not write to root filesystem" wants
//     ash's own message, "/bin/sh: can't create /file: Read-only file
//     system" (bash words it differently).
//
// So the image's /bin/sh is ash alone, built from the upstream busybox
// 1.37.0 source (Debian's copy of the release tarball, checked against its
// SHA-256) with a configuration of ash and nothing else, once, into the
// cache directory. The other applets stay Debian's.
const (
	ashSourceURL    = "http://deb.debian.org/debian/pool/main/b/busybox/busybox_1.37.0.orig.tar.bz2"
	ashSourceSHA256 = "3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4"
	ashSourceDir    = "busybox-1.37.0"
)

// ashConfig is what is switched on over `make allnoconfig` (which already
// picks ash as sh): ash, with the builtins and bash compatibility a busybox
// image's shell has.
var ashConfig = []string{
	"ASH", "ASH_BASH_COMPAT", "ASH_JOB_CONTROL", "ASH_ALIAS",
	"ASH_RANDOM_SUPPORT", "ASH_EXPAND_PRMT", "ASH_ECHO", "ASH_PRINTF", "ASH_TEST",
	"ASH_GETOPTS", "ASH_CMDCMD", "ASH_HELP", "FEATURE_SH_MATH", "FEATURE_SH_MATH_64",
	"FEATURE_SH_MATH_BASE", "FEATURE_SH_EXTRA_QUIET", "LONG_OPTS",
}

// cachedAsh returns the ash binary, building it into cacheDir/ash-1.37.0
// the first time.
func cachedAsh(ctx context.Context, cacheDir string) (string, error) {
	dir := filepath.Join(cacheDir, "ash-1.37.0")
	bin := filepath.Join(dir, "ash")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("ash cache: %w", err)
	}
	tarball := filepath.Join(dir, filepath.Base(ashSourceURL))
	if err := fetchChecked(ctx, ashSourceURL, ashSourceSHA256, tarball); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	log.G(ctx).Infof("building ash from busybox 1.37.0 in %s", work)
	src := filepath.Join(work, ashSourceDir)
	run := func(stdin string, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = src
		if name == "tar" {
			cmd.Dir = work
		}
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ash build: %s %s: %w: %s", name, strings.Join(args, " "), err, tail(out, 2000))
		}
		return nil
	}
	if err := run("", "tar", "-xjf", tarball); err != nil {
		return "", err
	}
	if err := run("", "make", "allnoconfig"); err != nil {
		return "", err
	}
	if err := enableConfig(filepath.Join(src, ".config"), ashConfig); err != nil {
		return "", err
	}
	// oldconfig asks about options that depend on the ones switched on: the
	// empty answers take their defaults.
	if err := run(strings.Repeat("\n", 500), "make", "oldconfig"); err != nil {
		return "", err
	}
	if cfg, err := os.ReadFile(filepath.Join(src, ".config")); err != nil {
		return "", err
	} else if !strings.Contains(string(cfg), "\nCONFIG_ASH=y\n") || !strings.Contains(string(cfg), "\nCONFIG_SH_IS_ASH=y\n") {
		return "", fmt.Errorf("ash build: the busybox configuration has no ash as sh: %w", errdefs.ErrFailedPrecondition)
	}
	if err := run("", "make", "-j2", "busybox"); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(src, "busybox"), bin); err != nil {
		return "", fmt.Errorf("ash cache: %w", err)
	}
	return bin, nil
}

// enableConfig switches the options on in a busybox .config.
func enableConfig(path string, opts []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	for _, o := range opts {
		off := "# CONFIG_" + o + " is not set\n"
		if !strings.Contains(s, off) {
			return fmt.Errorf("busybox config has no option %s: %w", o, errdefs.ErrNotFound)
		}
		s = strings.Replace(s, off, "CONFIG_"+o+"=y\n", 1)
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// fetchChecked downloads url to dst unless dst is already there with the
// SHA-256 want.
func fetchChecked(ctx context.Context, url, want, dst string) error {
	if sum, err := fileSHA256(dst); err == nil && sum == want {
		return nil
	}
	log.G(ctx).Infof("downloading %s", url)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w: %w", url, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: %s: %w", url, resp.Status, errdefs.ErrUnavailable)
	}
	tmp := dst + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("download %s: %w", url, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		os.Remove(tmp)
		return fmt.Errorf("download %s: sha256 %s, want %s: %w", url, got, want, errdefs.ErrDataLoss)
	}
	return os.Rename(tmp, dst)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
