// Package ocicli is `shim oci`, the runc-compatible OCI runtime CLI over
// pkg/libct, and `shim init`, the container init libct re-executes. Its
// command line is internal/cmdline's. The shim binary hands `shim oci`'s
// arguments to Run (cmd/shim); the lean runtime binary (cmd/shim-runtime)
// and a minimal test binary (test/oci/shimbin) run Main. A shim binary
// that embeds cmd/shim-init (`make build`) runs its containers' inits from
// that instead (SetEmbeddedInit).
package ocicli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shim-cri/shim/internal/binfile"
	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Command returns the "oci" command.
func Command() *cmdline.Command { return ociCommand }

// mainCommand is a binary of `shim oci` and `shim init` (Main, Run).
var mainCommand = &cmdline.Command{
	Name:     "shim",
	Usage:    "runc-compatible OCI runtime (shim oci)",
	Commands: []*cmdline.Command{ociCommand, initCommand},
}

// initCommand is the hidden "init" command: pkg/libct re-executes a
// sealed copy of the binary as "<binary> init" after the C stage in
// pkg/libct/nsenter has set up the namespaces. It never returns on success.
var initCommand = &cmdline.Command{
	Name:   "init",
	Hidden: true,
	Usage:  "internal: container init (started by pkg/libct)",
	Action: func(*cmdline.Context) error {
		libct.Init()
		return nil
	},
}

// DefaultRoot is the state directory of `shim oci` without --root.
const DefaultRoot = "/run/shim/oci"

// ociCommand is the runc-compatible OCI runtime CLI over pkg/libct. Its
// flags are those internal/ocilean's C parser knows (TestKnowsEveryGlobalFlag).
var ociCommand = &cmdline.Command{
	Name:  "oci",
	Usage: "runc-compatible OCI runtime CLI",
	Flags: []cmdline.Flag{
		{Name: "root", Default: DefaultRoot, Usage: "state directory"},
		{Name: "log", Usage: "log file (default stderr)"},
		{Name: "log-format", Default: "text", Usage: "text or json"},
		{Name: "systemd-cgroup", Kind: cmdline.Bool, Usage: "use systemd cgroups (not supported)"},
		{Name: "debug", Kind: cmdline.Bool},
		{Name: "criu", Hidden: true},
		{Name: "rootless", Hidden: true},
	},
	Before: ociBefore,
	Commands: []*cmdline.Command{
		ociCreate, ociStart, ociRun, ociState, ociKill, ociDelete, ociExec, ociList,
		ociPause, ociResume, ociUpdate, ociEvents, ociPs, ociFeatures,
	},
}

func ociBefore(c *cmdline.Context) error {
	logrus.SetOutput(os.Stderr)
	if c.Bool("debug") {
		logrus.SetLevel(logrus.DebugLevel)
	}
	if p := c.String("log"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return cmdline.Exit(fmt.Sprintf("open log %s: %v", p, err), 1)
		}
		logrus.SetOutput(f)
	}
	switch c.String("log-format") {
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{})
	case "text", "":
	default:
		return cmdline.Exit("unknown --log-format "+c.String("log-format"), 1)
	}
	if c.Bool("systemd-cgroup") {
		return ociFail(fmt.Errorf("--systemd-cgroup: systemd cgroups are not supported; use cgroupfs paths: %w", errdefs.ErrNotImplemented))
	}
	if leanInit != "" {
		logrus.Debugf("shim oci: the lean runtime binary (init %s)", leanInit)
	} else if root := c.String("root"); dirExists(root) || c.Arg(0) == "create" || c.Arg(0) == "run" {
		// Not for a state directory that is not there (a mistyped
		// --root): only a create makes it.
		installLean(root)
	}
	return nil
}

// useEmbeddedInit has libct run container inits and execs from the
// embedded init binary (create, run and exec call it first), or from the
// one the shim binary named when it handed this command to the lean
// runtime binary (Main).
func useEmbeddedInit(root string) {
	if leanInit != "" {
		libct.SetInitBinary(leanInit)
		return
	}
	if len(embeddedInit.content) == 0 {
		return
	}
	path, err := install(root, "shim-init-", embeddedInit)
	if err != nil {
		// This binary has the init too: slower to start, but it works.
		logrus.WithError(err).Warn("container inits run this binary: the embedded init binary cannot be written")
		return
	}
	libct.SetInitBinary(path)
}

// embedded is a binary the shim binary embeds and the start of its
// SHA-256, which names its file.
type embedded struct {
	content []byte
	sum     string
}

var embeddedInit, embeddedRuntime embedded

// SetEmbeddedInit gives `shim oci` the container init binary the shim
// binary embeds (cmd/shim-init) and a digest naming it: written once to
// <root>/.bin, it is what container inits and execs run instead of this
// much bigger binary (whose Go start each would pay).
func SetEmbeddedInit(content []byte, sum string) {
	embeddedInit = embedded{content, sum}
}

// SetEmbeddedRuntime gives `shim oci` the lean runtime binary the shim
// binary embeds (cmd/shim-runtime, which has this command too, Main)
// and a digest naming it. Every `shim oci` command the shim binary runs
// itself writes it (and the init) to <root>/.bin unless they are there;
// from then on the shim binary's C constructor (internal/ocilean) hands
// each `shim oci` command to it before the big binary's Go runtime and
// packages start (about 30 ms a command).
func SetEmbeddedRuntime(content []byte, sum string) {
	embeddedRuntime = embedded{content, sum}
}

// installLean writes the lean runtime and the init binaries to
// <root>/.bin for the next `shim oci` command; a failure only costs that
// command the big binary's start, so it is logged, not returned.
func installLean(root string) {
	if len(embeddedRuntime.content) == 0 || len(embeddedInit.content) == 0 {
		return
	}
	for _, b := range []struct {
		prefix string
		bin    embedded
	}{{"shim-init-", embeddedInit}, {"shim-runtime-", embeddedRuntime}} {
		if _, err := install(root, b.prefix, b.bin); err != nil {
			logrus.WithError(err).Warn("shim oci commands start the shim binary: the lean runtime binary cannot be written")
			return
		}
	}
}

// install writes bin to <root>/.bin/<prefix><sum> unless it is there, and
// returns its path.
func install(root, prefix string, bin embedded) (string, error) {
	if bin.sum == "" {
		return "", errors.New("the embedded " + strings.TrimSuffix(prefix, "-") + " binary has no digest")
	}
	// ".bin": no container id starts with a dot.
	dir := filepath.Join(root, ".bin")
	path := filepath.Join(dir, prefix+bin.sum)
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() && st.Size() == int64(len(bin.content)) {
		return path, nil
	}
	path, err := binfile.Write(dir, filepath.Base(path), bin.content)
	if err == nil {
		pruneBinaries(dir, prefix, filepath.Base(path), time.Now().Add(-binaryGrace))
	}
	return path, err
}

// binaryGrace is how long another version's binary is kept after this
// one installed its own: a command of that version may be about to run
// it. One that finds it gone installs it again.
const binaryGrace = time.Minute

// pruneBinaries removes the binaries with prefix other than keep, and
// the temporary files of interrupted writes, last written before cutoff:
// what other versions of shim installed (the state dir is on tmpfs by
// default, so each would hold its size in memory). Running processes keep
// what they execute.
func pruneBinaries(dir, prefix, keep string, cutoff time.Time) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !(strings.HasPrefix(e.Name(), prefix) || strings.HasPrefix(e.Name(), ".tmp-")) || e.Name() == keep {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				logrus.Debugf("shim oci: removed %s (another version's)", e.Name())
			}
		}
	}
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// LeanInitEnv names the init binary for a `shim oci` command the shim
// binary handed to the lean runtime binary (internal/ocilean sets it).
const LeanInitEnv = "_SHIM_OCI_INIT"

var leanInit string

// Main runs the `oci` and `init` commands in a binary of their own: the
// lean runtime binary (cmd/shim-runtime) and test builds. In the lean
// binary the shim binary's C constructor has named the init binary in
// LeanInitEnv, which is taken out of the environment the container's
// processes inherit.
func Main() {
	leanInit = os.Getenv(LeanInitEnv)
	os.Unsetenv(LeanInitEnv)
	if code := cmdline.Run(mainCommand, os.Args[1:], os.Stdout, os.Stderr); code != 0 {
		os.Exit(code)
	}
}

// Help is the usage `shim oci --help` prints.
func Help() string { return cmdline.Help(mainCommand.Name+" "+ociCommand.Name, ociCommand) }

// Run runs `shim oci` with args (those after "oci") in the shim binary
// (cmd/shim) and returns its exit status.
func Run(args []string) int {
	return cmdline.Run(mainCommand, append([]string{"oci"}, args...), os.Stdout, os.Stderr)
}

// ociFail logs err (so a caller reading --log sees it, as with runc) and
// returns it as exit status 1.
func ociFail(err error) error {
	if err == nil {
		return nil
	}
	var exit *cmdline.ExitError
	if errors.As(err, &exit) {
		return err
	}
	logrus.WithField("class", errdefs.Class(err)).Error(err.Error())
	if logrus.StandardLogger().Out != os.Stderr {
		fmt.Fprintln(os.Stderr, "shim oci:", err)
	}
	return cmdline.Exit("", 1)
}

func needID(c *cmdline.Context) (string, error) {
	id := c.Arg(0)
	if id == "" {
		return "", fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	}
	return id, nil
}

func loadContainer(c *cmdline.Context) (*libct.Container, error) {
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

// rootOf is the state directory: the --root of `shim oci`, which its
// subcommands' contexts find in their parent's.
func rootOf(c *cmdline.Context) string { return c.String("root") }
