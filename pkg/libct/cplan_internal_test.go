package libct

import (
	"bytes"
	"os"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

// TestCPlanHeader: the C init's header is what the Go definitions
// generate (an op or class added on one side only): run `go generate
// ./pkg/libct`.
func TestCPlanHeader(t *testing.T) {
	got, err := os.ReadFile(CPlanHeaderFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := CPlanHeader(); !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run `go generate ./pkg/libct`", CPlanHeaderFile)
	}
}

// TestRenderCPlan: a spec the C init covers gets a plan; each thing it
// does not cover sends the create to the Go init, with the reason.
func TestRenderCPlan(t *testing.T) {
	cfgOf := func(edit func(*initConfig)) *initConfig {
		s := testbundle.Spec("true")
		s.Root.Path = t.TempDir()
		cfg := createConfig("c1", s, s.Root.Path, t.TempDir(), "/c1", CreateOpts{},
			map[specs.LinuxNamespaceType]bool{specs.MountNamespace: true, specs.UTSNamespace: true, specs.CgroupNamespace: true})
		if edit != nil {
			edit(cfg)
		}
		return cfg
	}
	plan, why := renderCPlan(cfgOf(nil))
	if why != "" || !bytes.HasPrefix(plan, []byte(cplanMagic)) {
		t.Fatalf("plan of the test spec: %q (%d bytes)", why, len(plan))
	}
	for _, c := range []struct {
		name string
		edit func(*initConfig)
		want string
	}{
		{"no mount namespace", func(c *initConfig) { c.NewMountNS = false }, "mount namespace"},
		{"no pivot", func(c *initConfig) { c.NoPivot = true }, "pivot_root"},
		{"user namespace", func(c *initConfig) { c.UserNS = true }, "user namespace"},
		{"terminal", func(c *initConfig) { c.Process.Terminal = true }, "terminal"},
		{"start hook", func(c *initConfig) {
			c.Spec.Hooks = &specs.Hooks{StartContainer: []specs.Hook{{Path: "/bin/true"}}}
		}, "hooks"},
		{"selinux", func(c *initConfig) { c.Process.SelinuxLabel = "x" }, "LSM"},
		{"shared root", func(c *initConfig) { c.Spec.Linux.RootfsPropagation = "rshared" }, "propagation"},
		{"missing bind source", func(c *initConfig) {
			c.Spec.Mounts = append(c.Spec.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/no/such/dir"})
		}, "bind mount source"},
		{"idmapped", func(c *initConfig) {
			c.Spec.Mounts = append(c.Spec.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/", Options: []string{"idmap"}})
		}, "prepared mount"},
		{"unknown rlimit", func(c *initConfig) {
			c.Process.Rlimits = append(c.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NOPE"})
		}, "rlimit"},
		{"bad seccomp", func(c *initConfig) {
			c.Spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_NOPE"}
		}, "seccomp"},
		{"NUL", func(c *initConfig) { c.Process.Env = append(c.Process.Env, "A=\x00") }, "NUL"},
	} {
		if _, why := renderCPlan(cfgOf(c.edit)); !strings.Contains(why, c.want) {
			t.Errorf("%s: reason %q, want %q", c.name, why, c.want)
		}
	}
}
