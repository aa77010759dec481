// Package netdrv is pod networking: the Driver interface pkg/engine calls
// for every pod that does not use the host network, and the validation its
// drivers share. Drivers:
//
//   - bridge (pkg/netdrv/bridge, the default): built in, no CNI plugins;
//     a Linux bridge, one veth per pod, IPAM in the daemon's bbolt DB,
//     masquerade and hostPort DNAT through nftables.
//   - cni (pkg/netdrv/cni): the cluster's CNI plugins through libcni.
//
// One conformance suite (pkg/netdrv/testsuite) runs against both.
//
// Contract with the caller (pkg/engine):
//
//   - The caller pins the pod's network namespace (pkg/nspin) before Setup
//     and passes its path in Pod.NetNS.
//   - Setup either succeeds or leaves nothing behind. Calling Setup again
//     for a pod that is already set up replaces its network (retries after
//     a crash are safe).
//   - Teardown is idempotent and succeeds for unknown pods and for pods
//     whose namespace is gone. Call it before nspin.Unpin: CNI plugins can
//     only clean up inside the namespace while it exists.
//   - Drivers are safe for concurrent use by different pods; the caller
//     serializes calls for one pod (it holds the per-pod lock anyway).
package netdrv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Pod is what a driver needs to know about a pod sandbox.
type Pod struct {
	ID          string // sandbox id; also the CNI container id
	Name        string // metadata.name
	Namespace   string // metadata.namespace
	UID         string // metadata.uid
	NetNS       string // path of the pinned network namespace
	Ports       []PortMapping
	Annotations map[string]string
}

// PortMapping is one CRI port mapping. Mappings with HostPort 0 publish
// nothing and are ignored.
type PortMapping struct {
	Protocol      string // "tcp", "udp" or "sctp" (any case); "" is tcp
	ContainerPort int32
	HostPort      int32
	HostIP        string // "" or "0.0.0.0": every host address
}

// Result is the pod's network as set up.
type Result struct {
	IPs       []net.IP // the primary IP first
	Interface string   // name of the pod's interface inside its namespace
	Gateway   net.IP   // default gateway of the primary IP, if any
}

// Driver networks pod sandboxes.
type Driver interface {
	// Name is the driver's config name ("bridge", "cni").
	Name() string
	// Ready returns nil when pods can be networked (CRI NetworkReady), or
	// an error saying why not.
	Ready(ctx context.Context) error
	// Setup connects the pod's pinned namespace. On any failure it rolls
	// back everything it did.
	Setup(ctx context.Context, pod Pod) (Result, error)
	// Teardown removes everything Setup made for the pod. It is
	// idempotent: an unknown pod or a missing namespace is success.
	Teardown(ctx context.Context, pod Pod) error
	// SetPodCIDR applies the pod CIDR from CRI UpdateRuntimeConfig.
	// Drivers that get their addresses elsewhere (cni) ignore it.
	SetPodCIDR(ctx context.Context, cidr string) error
	// Close releases the driver's resources. Pods stay networked.
	Close() error
}

// ValidateID checks a pod id: 1 to 128 characters of [A-Za-z0-9_.-],
// starting with a letter or digit (the CNI container id rule).
func ValidateID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("pod id %q: want 1 to 128 characters: %w", id, errdefs.ErrInvalidArgument)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return fmt.Errorf("pod id %q: character %q at %d: %w", id, c, i, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Validate checks what every driver needs from a pod for Setup and returns
// its host port mappings in canonical form (see HostPorts).
func (p Pod) Validate() ([]PortMapping, error) {
	if err := ValidateID(p.ID); err != nil {
		return nil, err
	}
	if p.NetNS == "" {
		return nil, fmt.Errorf("pod %s: no network namespace: %w", p.ID, errdefs.ErrInvalidArgument)
	}
	return HostPorts(p.Ports)
}

// HostPorts validates port mappings and returns the ones that publish a
// host port in canonical form: protocol lower case, HostIP "" for every
// address or the canonical text of the address, exact duplicates removed.
// Errors wrap ErrInvalidArgument: an unknown protocol, a port out of range,
// an unparsable host IP, or one host port mapped to two container ports.
func HostPorts(ports []PortMapping) ([]PortMapping, error) {
	var out []PortMapping
	seen := map[string]int32{}
	for i, pm := range ports {
		if pm.HostPort == 0 {
			continue
		}
		proto := strings.ToLower(pm.Protocol)
		switch proto {
		case "":
			proto = "tcp"
		case "tcp", "udp", "sctp":
		default:
			return nil, fmt.Errorf("port mapping %d: protocol %q: %w", i, pm.Protocol, errdefs.ErrInvalidArgument)
		}
		if pm.HostPort < 1 || pm.HostPort > 65535 {
			return nil, fmt.Errorf("port mapping %d: host port %d: %w", i, pm.HostPort, errdefs.ErrInvalidArgument)
		}
		if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
			return nil, fmt.Errorf("port mapping %d: container port %d: %w", i, pm.ContainerPort, errdefs.ErrInvalidArgument)
		}
		hostIP := ""
		if pm.HostIP != "" {
			a, err := netip.ParseAddr(pm.HostIP)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("port mapping %d: host IP %q: %w", i, pm.HostIP, errdefs.ErrInvalidArgument)
			}
			a = a.Unmap()
			if !a.IsUnspecified() || a.Is6() {
				hostIP = a.String() // "::" stays: every IPv6 address
			}
		}
		key := fmt.Sprintf("%s/%d/%s", proto, pm.HostPort, hostIP)
		if prev, ok := seen[key]; ok {
			if prev != pm.ContainerPort {
				return nil, fmt.Errorf("port mapping %d: host port %s mapped to container ports %d and %d: %w",
					i, key, prev, pm.ContainerPort, errdefs.ErrInvalidArgument)
			}
			continue
		}
		seen[key] = pm.ContainerPort
		out = append(out, PortMapping{Protocol: proto, ContainerPort: pm.ContainerPort, HostPort: pm.HostPort, HostIP: hostIP})
	}
	return out, nil
}
