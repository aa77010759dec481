package libct

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestDirectRefusal: a spec goes to the helper's Create for each thing a
// direct create cannot do, and only then.
func TestDirectRefusal(t *testing.T) {
	base := func() *specs.Spec {
		return &specs.Spec{
			Process: &specs.Process{Args: []string{"true"}},
			Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}}},
			Mounts:  []specs.Mount{{Destination: "/data", Type: "bind", Source: "/tmp", Options: []string{"rbind", "ro"}}},
		}
	}
	if r := directRefusal(base()); r != "" {
		t.Errorf("a plain spec is refused: %s", r)
	}
	for _, c := range []struct {
		want string
		edit func(*specs.Spec)
	}{
		{"incomplete spec", func(s *specs.Spec) { s.Process = nil }},
		{"terminal", func(s *specs.Spec) { s.Process.Terminal = true }},
		{"hooks", func(s *specs.Spec) { s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/true"}}} }},
		{"hooks", func(s *specs.Spec) { s.Hooks = &specs.Hooks{Poststart: []specs.Hook{{Path: "/bin/true"}}} }},
		{"user namespace", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/1/ns/user"})
		}},
		{"prepared mount", func(s *specs.Spec) {
			s.Mounts[0].UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 1}}
		}},
	} {
		s := base()
		c.edit(s)
		if got := directRefusal(s); got != c.want {
			t.Errorf("%s: refusal %q", c.want, got)
		}
	}
	// Poststop hooks run at delete, by the driver: no refusal.
	s := base()
	s.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/true"}}}
	if r := directRefusal(s); r != "" {
		t.Errorf("poststop hooks are refused: %s", r)
	}
}
