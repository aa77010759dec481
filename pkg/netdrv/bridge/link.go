package bridge

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/nspin"
)

// podIfName is the pod's interface inside its namespace.
const podIfName = "eth0"

// vethName is the host-side veth of a pod: prefix + 8 hex digits of the
// SHA-256 of the pod id, so Teardown finds it without any state.
func vethName(prefix, podID string) string {
	sum := sha256.Sum256([]byte(podID))
	return prefix + hex.EncodeToString(sum[:4])
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

func ipnet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// ensureBridge creates the bridge if missing, brings it up with the pool's
// gateway address, and sets the sysctls pods need. It returns the bridge's
// interface index.
func ensureBridge(name string, mtu int, p *pool) (int, error) {
	link, err := netlink.LinkByName(name)
	if isNotFound(err) {
		mac := make(net.HardwareAddr, 6)
		if _, err := rand.Read(mac); err != nil {
			return 0, err
		}
		// A fixed, locally administered MAC: otherwise the bridge takes
		// the lowest port MAC and changes it as pods come and go.
		mac[0] = (mac[0] | 0x02) &^ 0x01
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: mac, TxQLen: -1}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("create bridge %s: %w", name, err)
		}
		link, err = netlink.LinkByName(name)
	}
	if err != nil {
		return 0, fmt.Errorf("bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return 0, fmt.Errorf("%s is a %s, not a bridge: %w", name, link.Type(), errdefs.ErrFailedPrecondition)
	}
	gw := &netlink.Addr{IPNet: ipnet(p.gateway, p.prefix.Bits())}
	if err := netlink.AddrReplace(link, gw); err != nil {
		return 0, fmt.Errorf("bridge %s: address %s: %w", name, gw.IPNet, err)
	}
	// Drop addresses of an earlier pool (a changed pod CIDR).
	addrs, err := netlink.AddrList(link, unix.AF_INET)
	if err != nil {
		return 0, fmt.Errorf("bridge %s: list addresses: %w", name, err)
	}
	for _, a := range addrs {
		if !a.IP.Equal(gw.IP) {
			if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return 0, fmt.Errorf("bridge %s: remove old address %s: %w", name, a.IPNet, err)
			}
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("bridge %s: up: %w", name, err)
	}
	for _, s := range []struct{ path, val string }{
		{"/proc/sys/net/ipv4/ip_forward", "1"},
		// 127.0.0.1:hostPort from the host leaves through the bridge.
		{filepath.Join("/proc/sys/net/ipv4/conf", name, "route_localnet"), "1"},
	} {
		if err := writeSysctl(s.path, s.val); err != nil {
			return 0, err
		}
	}
	return link.Attrs().Index, nil
}

func writeSysctl(path, val string) error {
	if b, err := os.ReadFile(path); err == nil && string(b) == val+"\n" {
		return nil
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", path, val, err)
	}
	return nil
}

// plumb creates the pod's veth pair, the host side on the bridge, the pod
// side as eth0 in the pod namespace, and configures the pod side. fd is the
// open pod network namespace.
func plumb(fd int, netnsPath, veth string, bridgeIndex, mtu int, ip netip.Addr, p *pool) error {
	link := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: veth, MTU: mtu, MasterIndex: bridgeIndex, Flags: net.FlagUp, TxQLen: -1,
		},
		PeerName:      podIfName,
		PeerNamespace: netlink.NsFd(fd),
		PeerTxQLen:    -1,
	}
	err := netlink.LinkAdd(link)
	if errors.Is(err, unix.EEXIST) {
		// Leftovers of an earlier attempt: a veth with our name (no other
		// pod owns it, the bolt claim said so) or an eth0 in the pod netns.
		if err := unplumb(veth); err != nil {
			return err
		}
		if err := nspin.Do(nspin.Net, netnsPath, func() error {
			if l, err := netlink.LinkByName(podIfName); err == nil {
				return netlink.LinkDel(l)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("remove stale %s: %w", podIfName, err)
		}
		err = netlink.LinkAdd(link)
	}
	if err != nil {
		return fmt.Errorf("create veth %s: %w", veth, err)
	}
	if err := netlink.LinkSetHairpin(link, true); err != nil {
		return fmt.Errorf("veth %s: hairpin: %w", veth, err)
	}
	return nspin.Do(nspin.Net, netnsPath, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}); err != nil {
			return fmt.Errorf("lo up: %w", err)
		}
		eth, err := h.LinkByName(podIfName)
		if err != nil {
			return err
		}
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(ip, p.prefix.Bits())}); err != nil {
			return fmt.Errorf("%s: address %s: %w", podIfName, ip, err)
		}
		if err := h.LinkSetUp(eth); err != nil {
			return fmt.Errorf("%s up: %w", podIfName, err)
		}
		route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: p.gateway.AsSlice(), Scope: netlink.SCOPE_UNIVERSE}
		if err := h.RouteAdd(route); err != nil {
			return fmt.Errorf("default route via %s: %w", p.gateway, err)
		}
		return nil
	})
}

// unplumb deletes the host-side veth (which deletes its peer); a missing
// veth is not an error.
func unplumb(veth string) error {
	l, err := netlink.LinkByName(veth)
	if isNotFound(err) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(l)
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete veth %s: %w", veth, err)
	}
	return nil
}
