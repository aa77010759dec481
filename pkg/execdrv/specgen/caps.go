package specgen

import (
	"context"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/log"
)

// AllCapabilities are the capabilities known, in number order.
var AllCapabilities = libct.CapabilityNames()

// DefaultCapabilities are the capabilities of an unprivileged container
// (Docker's and containerd's default set).
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

var capIndex = func() map[string]int {
	m := make(map[string]int, len(AllCapabilities))
	for i, c := range AllCapabilities {
		m[c] = i
	}
	return m
}()

// canonicalCap maps "net_admin", "NET_ADMIN" and "CAP_NET_ADMIN" to
// "CAP_NET_ADMIN"; "ALL" stays "ALL"; ok is false for an unknown name.
func canonicalCap(name string) (string, bool) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if n == "ALL" {
		return n, true
	}
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	_, ok := capIndex[n]
	return n, ok
}

// checkCaps refuses a capability to add that does not exist. Dropping one
// this host does not know is fine (kubelet passes the pod spec's names
// through; runc accepts them too): the container cannot have it.
func checkCaps(field string, names []string) error {
	for _, n := range names {
		c, ok := canonicalCap(n)
		if !ok && field == "drop_capabilities" && !hasCtl(n) {
			continue
		}
		if !ok || (c == "ALL" && field == "add_ambient_capabilities") {
			return inval("%s: unknown capability %q", field, n)
		}
	}
	return nil
}

// capSet is a set of capability indexes.
type capSet uint64

func (s capSet) names() []string {
	out := []string{}
	for i, c := range AllCapabilities {
		if s&(1<<uint(i)) != 0 {
			out = append(out, c)
		}
	}
	return out
}

func setOf(names []string) capSet {
	var s capSet
	for _, n := range names {
		if c, ok := canonicalCap(n); ok && c != "ALL" {
			s |= 1 << uint(capIndex[c])
		}
	}
	return s
}

func (o Options) grantable() capSet {
	if o.Capabilities == nil {
		return setOf(AllCapabilities)
	}
	return setOf(o.Capabilities)
}

// capabilities computes the process capabilities. Privileged: every
// capability the runtime may grant. Otherwise the defaults, then add "ALL",
// drop "ALL", the single adds (and ambient adds), the single drops, as
// containerd orders them so that add ALL + drop X and drop ALL + add X both
// work. Ambient capabilities go into every set; dropping wins over them.
// Added capabilities the runtime does not hold are left out with a warning.
func capabilities(ctx context.Context, c *runtimeapi.Capability, privileged bool, o Options) (*specs.LinuxCapabilities, error) {
	for _, f := range []struct {
		name  string
		names []string
	}{
		{"add_capabilities", c.GetAddCapabilities()},
		{"drop_capabilities", c.GetDropCapabilities()},
		{"add_ambient_capabilities", c.GetAddAmbientCapabilities()},
	} {
		if err := checkCaps(f.name, f.names); err != nil {
			return nil, err
		}
	}
	grant := o.grantable()
	var set capSet
	if privileged {
		set = grant
	} else {
		set = setOf(DefaultCapabilities)
		if hasAll(c.GetAddCapabilities()) {
			set = grant
		}
		if hasAll(c.GetDropCapabilities()) {
			set = 0
		}
		set |= setOf(c.GetAddCapabilities())
	}
	ambient := setOf(c.GetAddAmbientCapabilities())
	set |= ambient
	if !privileged {
		drop := setOf(c.GetDropCapabilities())
		set &^= drop
		ambient &^= drop
	}
	if missing := set &^ grant; missing != 0 {
		log.G(ctx).WithField("capabilities", missing.names()).Warn("capabilities the runtime does not hold are left out")
		set &= grant
		ambient &= grant
	}
	names := set.names()
	return &specs.LinuxCapabilities{
		Bounding:    names,
		Effective:   slices.Clone(names),
		Permitted:   slices.Clone(names),
		Inheritable: ambient.names(),
		Ambient:     ambient.names(),
	}, nil
}

func hasAll(names []string) bool {
	for _, n := range names {
		if strings.EqualFold(strings.TrimSpace(n), "ALL") {
			return true
		}
	}
	return false
}
