package ocilean

import (
	"testing"

	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/libct/ocicli"
)

// TestLeanRoot: the constructor finds the state directory of every
// `shim oci` command line ocicli accepts and leaves the rest (help,
// unknown flags, other commands) to the Go command.
func TestLeanRoot(t *testing.T) {
	for _, c := range []struct {
		args []string
		root string // "" = not handed over
	}{
		{[]string{"shim", "oci", "run", "x"}, "/run/shim/oci"},
		{[]string{"shim", "oci", "--root", "/r", "create", "--bundle", "b", "x"}, "/r"},
		{[]string{"shim", "oci", "--root=/r", "state", "x"}, "/r"},
		{[]string{"shim", "oci", "-root", "/r", "state", "x"}, "/r"},
		{[]string{"shim", "oci", "--log", "/l", "--log-format", "json", "--root", "/r", "--debug", "--systemd-cgroup=false", "kill", "x", "KILL"}, "/r"},
		{[]string{"shim", "oci", "--root", "/r", "--log=/l", "--criu", "c", "--rootless", "false", "delete", "x"}, "/r"},
		{[]string{"shim", "oci", "--root", "/a", "--root", "/b", "list"}, "/b"},
		{[]string{"shim", "oci", "--root", "relative", "list"}, "relative"},
		{[]string{"shim", "oci", "--root=", "list"}, ""},
		{[]string{"shim", "oci", "--root"}, ""},
		{[]string{"shim", "oci", "--root", "/r"}, ""},
		{[]string{"shim", "oci"}, ""},
		{[]string{"shim", "oci", "--help"}, ""},
		{[]string{"shim", "oci", "-h", "run"}, ""},
		{[]string{"shim", "oci", "--", "run"}, ""},
		{[]string{"shim", "oci", "--new-flag", "run"}, ""},
		{[]string{"shim", "serve"}, ""},
		{[]string{"shim", "init"}, ""},
		{[]string{"shim"}, ""},
	} {
		root, ok := leanRoot(c.args)
		if ok != (c.root != "") || root != c.root {
			t.Errorf("%q: %q %v, want %q", c.args, root, ok, c.root)
		}
	}
}

// TestConstants: the C side agrees with ocicli.
func TestConstants(t *testing.T) {
	if defaultRoot() != ocicli.DefaultRoot {
		t.Errorf("C default root %q, ocicli's %q", defaultRoot(), ocicli.DefaultRoot)
	}
	if initEnv != ocicli.LeanInitEnv {
		t.Errorf("C init variable %q, ocicli's %q", initEnv, ocicli.LeanInitEnv)
	}
}

// TestKnowsEveryGlobalFlag: each of `shim oci`'s global flags is one the
// constructor knows, as a flag with a value or without, as ocicli does (a
// flag added to ocicli and not here would send every command that uses
// it through the big binary's Go start; one the two read differently
// would have the lean binary run in another state directory).
func TestKnowsEveryGlobalFlag(t *testing.T) {
	for _, f := range ocicli.Command().Flags {
		for _, name := range f.Names() {
			// A flag without a value leaves "list" the subcommand.
			args := []string{"shim", "oci", "--" + name, "list"}
			want := ocicli.DefaultRoot
			if f.Kind != cmdline.Bool {
				// One with a value takes the next argument, whatever it is.
				args = []string{"shim", "oci", "--" + name, "--root=/next", "list"}
				if name == "root" {
					want = "--root=/next"
				}
			}
			if root, ok := leanRoot(args); !ok || root != want {
				t.Errorf("global flag --%s: %q: root %q, handed over %v; want %q", name, args, root, ok, want)
			}
		}
	}
}
