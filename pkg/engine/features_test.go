package engine

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go/features"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
)

// TestHandlerFeatures: a handler's features are its runtime's (OCI
// features) and the host's together, with the reason for each one missing.
func TestHandlerFeatures(t *testing.T) {
	yes := true
	runc11 := &features.Features{MountOptions: []string{"rbind", "ro", "rro"},
		Linux: &features.Linux{Namespaces: []string{"mount", "user"}}}
	runc12 := &features.Features{MountOptions: []string{"rro", "idmap", "ridmap"},
		Linux: &features.Linux{Namespaces: []string{"user"}, MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: &yes}}}}
	noUser := &features.Features{MountOptions: []string{"ro"}, Linux: &features.Linux{Namespaces: []string{"mount"}}}
	good := &hostFeatures{rro: true}
	oldKernel := &hostFeatures{idmap: errors.New("the kernel has no mount_setattr")}
	for _, c := range []struct {
		name      string
		f         *features.Features
		host      *hostFeatures
		rro, user bool
		missing   []string
	}{
		{"native", execdrv.NativeFeatures(), good, true, true, nil},
		{"runc 1.1", runc11, good, true, false, []string{"has no idmapped mounts"}},
		{"runc 1.2", runc12, good, true, true, nil},
		{"no user namespaces, no rro", noUser, good, false, false, []string{"has no rro", "has no user namespaces"}},
		{"native on an old kernel", execdrv.NativeFeatures(), oldKernel, false, false, []string{"mount_setattr (recursive", "user namespaces: the kernel"}},
	} {
		got := handlerFeatures(c.f, c.host, "rt")
		if got.RecursiveReadOnly != c.rro || got.UserNamespaces != c.user {
			t.Errorf("%s: rro %v userns %v, want %v %v", c.name, got.RecursiveReadOnly, got.UserNamespaces, c.rro, c.user)
		}
		for _, m := range c.missing {
			if !strings.Contains(got.Missing, m) {
				t.Errorf("%s: missing %q, want it to say %q", c.name, got.Missing, m)
			}
		}
		if len(c.missing) == 0 && got.Missing != "" {
			t.Errorf("%s: missing %q", c.name, got.Missing)
		}
	}
}

// TestCheckHandlerUserns: a pod with a user namespace needs a handler
// that has them; other pods do not care.
func TestCheckHandlerUserns(t *testing.T) {
	r := &Runtime{handlers: map[string]*runtimeHandler{
		"":     {name: "", features: HandlerFeatures{UserNamespaces: true}},
		"runc": {name: "runc", features: HandlerFeatures{RecursiveReadOnly: true, Missing: "runc has no idmapped mounts"}},
	}}
	check := func(name string, cfg *runtimeapi.PodSandboxConfig) error {
		h, err := r.handler(name)
		if err != nil {
			return err
		}
		return checkHandlerUserns(h, cfg)
	}
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 65536, Length: 65536}}
	userns := &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}}}
	plain := &runtimeapi.PodSandboxConfig{}
	if err := check("", userns); err != nil {
		t.Errorf("default handler: %v", err)
	}
	if err := check("runc", userns); !errdefs.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "idmapped") {
		t.Errorf("runc: %v", err)
	}
	if err := check("runc", plain); err != nil {
		t.Errorf("runc without a user namespace: %v", err)
	}
	if err := check("nope", userns); !errdefs.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown handler: %v", err)
	}
}

// TestResolveHandlers: one resolution of the RuntimeClass handlers gives
// the monitor flags, the driver and the error for an unknown handler.
func TestResolveHandlers(t *testing.T) {
	r := &Runtime{handlers: resolveHandlers(map[string]string{"runc": "/usr/sbin/runc", "mine": "native", "empty": ""}, "/s/libct", "/s/runc"),
		sandboxes: map[string]*Sandbox{"pod1": {ID: "pod1", Handler: "gone"}}}
	for _, c := range []struct {
		name, driver string
		args         []string
	}{
		{"", "native", []string{"--log-level", "info", "--runtime-root", "/s/libct"}},
		{"native", "native", []string{"--log-level", "info", "--runtime-root", "/s/libct"}},
		{"mine", "native", []string{"--log-level", "info", "--runtime-root", "/s/libct"}},
		{"empty", "native", []string{"--log-level", "info", "--runtime-root", "/s/libct"}},
		{"runc", "oci-binary:runc", []string{"--log-level", "info", "--runtime-root", "/s/runc/runc", "--runtime-binary", "/usr/sbin/runc"}},
	} {
		h, err := r.handler(c.name)
		if err != nil {
			t.Errorf("handler %q: %v", c.name, err)
			continue
		}
		if got := h.monitorArgs("info"); !slices.Equal(got, c.args) {
			t.Errorf("handler %q: monitor args %q, want %q", c.name, got, c.args)
		}
		if got := h.driver.Name(); got != c.driver {
			t.Errorf("handler %q: driver %q, want %q", c.name, got, c.driver)
		}
	}
	if _, err := r.handler("nope"); !errdefs.IsNotFound(err) {
		t.Errorf("unknown handler: %v, want NotFound", err)
	}
	// A pod whose handler left the config is not handed to another driver.
	if _, err := r.podDriver("pod1"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("pod of a handler no longer configured: %v, want FailedPrecondition", err)
	}
	if d, err := r.podDriver("no-such-pod"); err != nil || d.Name() != "native" {
		t.Errorf("container without a pod record: driver %v, %v; want the default handler's", d, err)
	}
}
