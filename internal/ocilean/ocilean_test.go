package ocilean

import (
	"testing"

	"github.com/shim-cri/shim/pkg/libct/ocicli"
	"github.com/urfave/cli/v2"
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
// constructor knows, as a flag with a value or without (a flag added to
// ocicli and not here would send every command that uses it through the
// big binary's Go start).
func TestKnowsEveryGlobalFlag(t *testing.T) {
	for _, f := range ocicli.Command().Flags {
		for _, name := range f.Names() {
			args := []string{"shim", "oci", "--" + name, "list"}
			if _, isBool := f.(*cli.BoolFlag); !isBool {
				args = []string{"shim", "oci", "--" + name, "v", "list"}
			}
			if _, ok := leanRoot(args); !ok {
				t.Errorf("global flag --%s: %q not handed over", name, args)
			}
		}
	}
}
