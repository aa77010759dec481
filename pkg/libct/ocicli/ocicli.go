// Package ocicli is `shim oci`, the runc-compatible OCI runtime CLI over
// pkg/libct, and `shim init`, the container init libct re-executes. The
// shim binary registers both (cmd/shim); tests build a minimal binary
// with them (test/oci/shimbin). A shim binary that embeds cmd/shim-init
// (`make build`) runs its containers' inits from that instead
// (SetEmbeddedInit).
package ocicli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shim-cri/shim/internal/binfile"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// Command returns the "oci" command.
func Command() *cli.Command { return ociCommand }

// InitCommand returns the hidden "init" command: pkg/libct re-executes a
// sealed copy of the binary as "<binary> init" after the C stage in
// pkg/libct/nsenter has set up the namespaces. It never returns on success.
func InitCommand() *cli.Command { return initCommand }

var initCommand = &cli.Command{
	Name:   "init",
	Hidden: true,
	Usage:  "internal: container init (started by pkg/libct)",
	Action: func(c *cli.Context) error {
		libct.Init()
		return nil
	},
}

// ociCommand is the runc-compatible OCI runtime CLI over pkg/libct.
var ociCommand = &cli.Command{
	Name:  "oci",
	Usage: "runc-compatible OCI runtime CLI",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "root", Value: "/run/shim/oci", Usage: "state directory"},
		&cli.StringFlag{Name: "log", Usage: "log file (default stderr)"},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"},
		&cli.BoolFlag{Name: "systemd-cgroup", Usage: "use systemd cgroups (not supported)"},
		&cli.BoolFlag{Name: "debug"},
		&cli.StringFlag{Name: "criu", Hidden: true},
		&cli.StringFlag{Name: "rootless", Hidden: true},
	},
	Before: ociBefore,
	Subcommands: []*cli.Command{
		ociCreate, ociStart, ociRun, ociState, ociKill, ociDelete, ociExec, ociList,
		ociPause, ociResume, ociUpdate, ociEvents, ociPs, ociFeatures,
	},
}

func ociBefore(c *cli.Context) error {
	logrus.SetOutput(os.Stderr)
	if c.Bool("debug") {
		logrus.SetLevel(logrus.DebugLevel)
	}
	if p := c.String("log"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return cli.Exit(fmt.Sprintf("open log %s: %v", p, err), 1)
		}
		logrus.SetOutput(f)
	}
	switch c.String("log-format") {
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{})
	case "text", "":
	default:
		return cli.Exit("unknown --log-format "+c.String("log-format"), 1)
	}
	if c.Bool("systemd-cgroup") {
		return ociFail(fmt.Errorf("--systemd-cgroup: systemd cgroups are not supported; use cgroupfs paths: %w", errdefs.ErrNotImplemented))
	}
	return nil
}

// useEmbeddedInit has libct run container inits and execs from the
// embedded init binary (create, run and exec call it first).
func useEmbeddedInit(root string) {
	if len(embeddedInit.content) == 0 {
		return
	}
	path, err := installInit(root)
	if err != nil {
		// This binary has the init too: slower to start, but it works.
		logrus.WithError(err).Warn("container inits run this binary: the embedded init binary cannot be written")
		return
	}
	libct.SetInitBinary(path)
}

var embeddedInit struct {
	content []byte
	sum     string
}

// SetEmbeddedInit gives `shim oci` the container init binary the shim
// binary embeds (cmd/shim-init) and a digest naming it: written once to
// <root>/.bin, it is what container inits and execs run instead of this
// much bigger binary (whose Go start each would pay).
func SetEmbeddedInit(content []byte, sum string) {
	embeddedInit.content, embeddedInit.sum = content, sum
}

// installInit writes the embedded init binary to <root>/.bin/shim-init-<sum>
// unless it is there, and returns its path.
func installInit(root string) (string, error) {
	if embeddedInit.sum == "" {
		return "", errors.New("the embedded init binary has no digest")
	}
	// ".bin": no container id starts with a dot.
	dir := filepath.Join(root, ".bin")
	path := filepath.Join(dir, "shim-init-"+embeddedInit.sum)
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() && st.Size() == int64(len(embeddedInit.content)) {
		return path, nil
	}
	return binfile.Write(dir, filepath.Base(path), embeddedInit.content)
}

// ociFail logs err (so a caller reading --log sees it, as with runc) and
// returns it as exit status 1.
func ociFail(err error) error {
	if err == nil {
		return nil
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return err
	}
	logrus.WithField("class", errdefs.Class(err)).Error(err.Error())
	if logrus.StandardLogger().Out != os.Stderr {
		fmt.Fprintln(os.Stderr, "shim oci:", err)
	}
	return cli.Exit("", 1)
}

func needID(c *cli.Context) (string, error) {
	id := c.Args().First()
	if id == "" {
		return "", fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	return id, nil
}

func loadContainer(c *cli.Context) (*libct.Container, error) {
	id, err := needID(c)
	if err != nil {
		return nil, err
	}
	ct, err := libct.Load(rootOf(c), id)
	if err != nil && errdefs.IsNotFound(err) {
		// runc's wording: callers (containerd) look for it.
		return nil, fmt.Errorf("container %q does not exist: %w", id, errdefs.ErrNotFound)
	}
	return ct, err
}

func rootOf(c *cli.Context) string {
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.Command.Name == "oci" {
			return ctx.String("root")
		}
	}
	return c.String("root")
}
