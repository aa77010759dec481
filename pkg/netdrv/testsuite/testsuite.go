// Package testsuite is the conformance suite every netdrv driver runs:
//
//	func TestBridge(t *testing.T) {
//		testsuite.Run(t, testsuite.Harness{New: ..., Residue: ..., BridgePrefix: "shtb", Net: "10.213"})
//	}
//
// Every subtest gets its own bridge (BridgePrefix + a number) and pod CIDR
// (Net + ".<n>.0/24"), pins its pods' namespaces itself, and checks that
// nothing is left: no veth on its bridge, no driver residue (IPAM entries,
// firewall rules, caches). Traffic stays on loopback and on the pod
// addresses inside namespaces the suite created. It needs root.
package testsuite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/nspin"
)

// Config is what a subtest asks of the driver.
type Config struct {
	Bridge string    // bridge interface the driver must use
	CIDR   string    // IPv4 pod CIDR; the gateway is its first address
	Dir    string    // private directory of the subtest (state, caches)
	DB     *bbolt.DB // open database in Dir (drivers that keep state in bolt)
}

// Harness adapts a driver to the suite.
type Harness struct {
	// New opens the driver for cfg. It may be called again with the same
	// cfg after Close (a daemon restart).
	New func(t *testing.T, cfg Config) netdrv.Driver
	// Destroy removes what the driver made on the host for cfg (bridge,
	// tables); the suite calls it last, after its own checks.
	Destroy func(t *testing.T, cfg Config)
	// Residue lists the per-pod state the driver keeps for cfg (IPAM
	// entries, firewall rules, caches), one string per item, each naming
	// the pod id. It must be empty once every pod is torn down.
	Residue func(t *testing.T, cfg Config) []string
	// PortConflicts: Setup rejects a host port another pod holds with
	// ErrAlreadyExists (the bridge driver; CNI portmap does not check).
	PortConflicts bool
	// ExhaustedClass is the error class Setup returns when the pool is
	// empty; nil accepts any error.
	ExhaustedClass error
	// BridgePrefix names the subtests' bridges (at most 12 characters).
	BridgePrefix string
	// Net is the first two octets of the subtests' pod CIDRs ("10.213").
	Net string
	// PortBase starts the 5000 host ports the suite publishes, so suites
	// of different drivers can run at the same time.
	PortBase int32
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*env)
	}{
		{"SetupTeardown", testSetupTeardown},
		{"Validation", testValidation},
		{"PodToPod", testPodToPod},
		{"HostPortTCP", testHostPortTCP},
		{"HostPortUDP", testHostPortUDP},
		{"Hairpin", testHairpin},
		{"MissingNetNS", testMissingNetNS},
		{"SetupTwice", testSetupTwice},
		{"Exhausted", testExhausted},
		{"PortConflict", testPortConflict},
		{"Restart", testRestart},
		{"Concurrent", testConcurrent},
		{"Leak", testLeak},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if os.Getuid() != 0 {
				t.Skip("needs root")
			}
			tc.fn(setup(t, h, i+1, 24))
		})
	}
}

type env struct {
	*testing.T
	h   Harness
	ctx context.Context
	cfg Config
	drv netdrv.Driver
	n   int // pods made so far
}

func setup(t *testing.T, h Harness, n, bits int) *env {
	dir := t.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "meta.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := Config{
		Bridge: fmt.Sprintf("%s%d", h.BridgePrefix, n),
		CIDR:   fmt.Sprintf("%s.%d.0/%d", h.Net, n, bits),
		Dir:    dir,
		DB:     db,
	}
	e := &env{T: t, h: h, ctx: context.Background(), cfg: cfg}
	t.Cleanup(func() { h.Destroy(t, cfg) })
	t.Cleanup(func() {
		if !t.Failed() {
			e.assertClean()
		}
	})
	e.open()
	return e
}

func (e *env) open() {
	e.Helper()
	d := e.h.New(e.T, e.cfg)
	e.drv = d
	e.Cleanup(func() { d.Close() })
}

func (e *env) gateway() net.IP {
	_, n, _ := net.ParseCIDR(e.cfg.CIDR)
	gw := slices.Clone(n.IP.To4())
	gw[3]++
	return gw
}

// pod pins a network namespace and returns a pod using it.
func (e *env) pod(ports ...netdrv.PortMapping) netdrv.Pod {
	e.Helper()
	e.n++
	id := fmt.Sprintf("%08x%02d", rand.Uint32(), e.n)
	path := filepath.Join(e.cfg.Dir, "netns", id)
	if err := nspin.Pin(e.ctx, nspin.Net, path); err != nil {
		e.Fatal(err)
	}
	e.Cleanup(func() { nspin.Unpin(path) })
	return netdrv.Pod{ID: id, Name: "pod-" + id, Namespace: "test", UID: "uid-" + id, NetNS: path, Ports: ports}
}

func (e *env) setupPod(p netdrv.Pod) netdrv.Result {
	e.Helper()
	res, err := e.drv.Setup(e.ctx, p)
	if err != nil {
		e.Fatalf("Setup(%s): %v", p.ID, err)
	}
	e.Cleanup(func() { e.drv.Teardown(context.Background(), p) })
	return res
}

func (e *env) teardown(p netdrv.Pod) {
	e.Helper()
	if err := e.drv.Teardown(e.ctx, p); err != nil {
		e.Fatalf("Teardown(%s): %v", p.ID, err)
	}
}

// veths returns the interfaces enslaved to the subtest's bridge.
func (e *env) veths() []string {
	e.Helper()
	br, err := netlink.LinkByName(e.cfg.Bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		e.Fatal(err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		e.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// waitVeths waits until the bridge has n ports (netns teardown is async).
func (e *env) waitVeths(n int) {
	e.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := e.veths()
		if len(v) == n {
			return
		}
		if time.Now().After(deadline) {
			e.Fatalf("bridge %s has ports %v, want %d", e.cfg.Bridge, v, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// residueOf returns the residue items naming pod id.
func (e *env) residueOf(id string) []string {
	e.Helper()
	var out []string
	for _, r := range e.h.Residue(e.T, e.cfg) {
		if strings.Contains(r, id) {
			out = append(out, r)
		}
	}
	return out
}

// assertGone checks that pod p left nothing behind.
func (e *env) assertGone(p netdrv.Pod) {
	e.Helper()
	if r := e.residueOf(p.ID); len(r) > 0 {
		e.Fatalf("pod %s left residue: %v", p.ID, r)
	}
}

func (e *env) assertClean() {
	e.Helper()
	e.waitVeths(0)
	if r := e.h.Residue(e.T, e.cfg); len(r) > 0 {
		e.Fatalf("residue after the test: %v", r)
	}
}

func wantClass(t testing.TB, what string, err, class error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, class)
	}
	if class != nil && !errors.Is(err, class) {
		t.Fatalf("%s: %v (class %s), want %v", what, err, errdefs.Class(err), class)
	}
}

// hostPort picks a host port from the first 4000 of the harness' range
// (below the ephemeral range, so unlikely to be in use).
func (e *env) hostPort() int32 { return e.h.PortBase + rand.Int32N(4000) }

// ---- traffic helpers ----

// echoTCP serves a line echo on port inside the pod namespace.
func (e *env) echoTCP(p netdrv.Pod, port int) {
	e.Helper()
	var ln net.Listener
	if err := nspin.Do(nspin.Net, p.NetNS, func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		e.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				s := bufio.NewScanner(c)
				for s.Scan() {
					fmt.Fprintf(c, "%s from %s\n", s.Text(), p.ID)
				}
			}()
		}
	}()
	e.Cleanup(func() { ln.Close(); wg.Wait() })
}

// echoUDP serves a datagram echo on port inside the pod namespace.
func (e *env) echoUDP(p netdrv.Pod, port int) {
	e.Helper()
	var pc net.PacketConn
	if err := nspin.Do(nspin.Net, p.NetNS, func() (err error) {
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		e.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append(buf[:n:n], []byte(" from "+p.ID)...), from)
		}
	}()
	e.Cleanup(func() { pc.Close(); <-done })
}

// talkTCP dials addr (inside ns when ns is not "") and checks the echo
// comes from pod want.
func talkTCP(ns, addr, want string) error {
	var c net.Conn
	dial := func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 3*time.Second)
		return err
	}
	var err error
	if ns != "" {
		err = nspin.Do(nspin.Net, ns, dial)
	} else {
		err = dial()
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read from %s: %w", addr, err)
	}
	if line != "hello from "+want+"\n" {
		return fmt.Errorf("%s answered %q, want the echo of pod %s", addr, line, want)
	}
	return nil
}

// talkUDP sends datagrams to addr until the echo of pod want comes back.
func talkUDP(ns, addr, want string) error {
	var c net.Conn
	dial := func() (err error) {
		c, err = net.Dial("udp4", addr)
		return err
	}
	var err error
	if ns != "" {
		err = nspin.Do(nspin.Net, ns, dial)
	} else {
		err = dial()
	}
	if err != nil {
		return err
	}
	defer c.Close()
	return exchangeUDP(c.(*net.UDPConn), nil, want)
}

// exchangeUDP sends datagrams on c (to "to", or c's peer when nil) until
// the echo of pod want comes back.
func exchangeUDP(c *net.UDPConn, to *net.UDPAddr, want string) error {
	buf := make([]byte, 1500)
	var last error
	for i := 0; i < 15; i++ {
		if to != nil {
			c.WriteTo([]byte("hello"), to)
		} else {
			c.Write([]byte("hello"))
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			last = err
			continue
		}
		if got := string(buf[:n]); got != "hello from "+want {
			return fmt.Errorf("answer %q, want the echo of pod %s", got, want)
		}
		return nil
	}
	return fmt.Errorf("udp: no answer: %v", last)
}

// hostAddrs are local IPv4 addresses of the host to reach host ports on:
// the gateway, and one global address of another interface if any.
func (e *env) hostAddrs() []string {
	out := []string{e.gateway().String()}
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		e.Fatal(err)
	}
	routes, err := netlink.RouteList(nil, unix.AF_INET)
	if err != nil {
		e.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
			continue
		}
		for _, a := range addrs {
			if a.LinkIndex == r.LinkIndex && a.IP.IsGlobalUnicast() {
				return append(out, a.IP.String())
			}
		}
	}
	return out
}

// ---- tests ----

func testSetupTeardown(e *env) {
	p := e.pod(netdrv.PortMapping{Protocol: "TCP", ContainerPort: 80, HostPort: e.hostPort()})
	res := e.setupPod(p)
	_, pods, _ := net.ParseCIDR(e.cfg.CIDR)
	if len(res.IPs) == 0 || !pods.Contains(res.IPs[0]) {
		e.Fatalf("result IPs %v, want the first in %s", res.IPs, e.cfg.CIDR)
	}
	if res.Interface != "eth0" {
		e.Errorf("interface %q, want eth0", res.Interface)
	}
	if !res.Gateway.Equal(e.gateway()) {
		e.Errorf("gateway %v, want %v", res.Gateway, e.gateway())
	}
	if v := e.veths(); len(v) != 1 {
		e.Fatalf("bridge ports %v, want one veth", v)
	}
	// Inside: eth0 with the address, lo up with 127.0.0.1, default route.
	err := nspin.Do(nspin.Net, p.NetNS, func() error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if eth.Attrs().Flags&net.FlagUp == 0 {
			return errors.New("eth0 is down")
		}
		addrs, err := netlink.AddrList(eth, unix.AF_INET)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || !addrs[0].IP.Equal(res.IPs[0]) {
			return fmt.Errorf("eth0 addresses %v, want %v", addrs, res.IPs[0])
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return errors.New("lo is down")
		}
		routes, err := netlink.RouteList(nil, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(e.gateway()) && r.LinkIndex == eth.Attrs().Index {
				return nil
			}
		}
		return fmt.Errorf("no default route via %v in %v", e.gateway(), routes)
	})
	if err != nil {
		e.Fatal(err)
	}
	// The pod reaches its gateway and its own loopback.
	e.echoTCP(p, 7000)
	if err := talkTCP(p.NetNS, "127.0.0.1:7000", p.ID); err != nil {
		e.Fatalf("pod loopback: %v", err)
	}
	if err := talkTCP("", net.JoinHostPort(res.IPs[0].String(), "7000"), p.ID); err != nil {
		e.Fatalf("host to pod address: %v", err)
	}
	if len(e.residueOf(p.ID)) == 0 {
		e.Fatalf("the harness reports no residue for a live pod: the leak checks would prove nothing")
	}

	e.teardown(p)
	e.waitVeths(0)
	e.assertGone(p)
	if err := e.drv.Teardown(e.ctx, p); err != nil {
		e.Fatalf("second Teardown: %v", err)
	}
	if err := e.drv.Teardown(e.ctx, netdrv.Pod{ID: "neverseen", NetNS: "/nonexistent"}); err != nil {
		e.Fatalf("Teardown of an unknown pod: %v", err)
	}
	if err := e.drv.Ready(e.ctx); err != nil {
		e.Fatalf("Ready: %v", err)
	}
}

func testValidation(e *env) {
	plain := filepath.Join(e.cfg.Dir, "plainfile")
	if err := os.WriteFile(plain, nil, 0o444); err != nil {
		e.Fatal(err)
	}
	good := e.pod()
	uts := filepath.Join(e.cfg.Dir, "uts")
	if err := nspin.Pin(e.ctx, nspin.UTS, uts); err != nil {
		e.Fatal(err)
	}
	defer nspin.Unpin(uts)
	port := func(proto string, cport, hport int32, ip string) []netdrv.PortMapping {
		return []netdrv.PortMapping{{Protocol: proto, ContainerPort: cport, HostPort: hport, HostIP: ip}}
	}
	for _, tc := range []struct {
		name  string
		mod   func(*netdrv.Pod)
		class error
	}{
		{"EmptyID", func(p *netdrv.Pod) { p.ID = "" }, errdefs.ErrInvalidArgument},
		{"IDWithSlash", func(p *netdrv.Pod) { p.ID = "a/../b" }, errdefs.ErrInvalidArgument},
		{"IDWithNewline", func(p *netdrv.Pod) { p.ID = "abc\ndef" }, errdefs.ErrInvalidArgument},
		{"NoNetNS", func(p *netdrv.Pod) { p.NetNS = "" }, errdefs.ErrInvalidArgument},
		{"MissingNetNS", func(p *netdrv.Pod) { p.NetNS = filepath.Join(e.cfg.Dir, "missing") }, errdefs.ErrFailedPrecondition},
		{"PlainFileNetNS", func(p *netdrv.Pod) { p.NetNS = plain }, errdefs.ErrFailedPrecondition},
		{"UTSNotNet", func(p *netdrv.Pod) { p.NetNS = uts }, errdefs.ErrFailedPrecondition},
		{"HostPortTooBig", func(p *netdrv.Pod) { p.Ports = port("tcp", 80, 70000, "") }, errdefs.ErrInvalidArgument},
		{"HostPortNegative", func(p *netdrv.Pod) { p.Ports = port("tcp", 80, -1, "") }, errdefs.ErrInvalidArgument},
		{"ContainerPortZero", func(p *netdrv.Pod) { p.Ports = port("tcp", 0, 20080, "") }, errdefs.ErrInvalidArgument},
		{"Protocol", func(p *netdrv.Pod) { p.Ports = port("icmp", 80, 20080, "") }, errdefs.ErrInvalidArgument},
		{"HostIP", func(p *netdrv.Pod) { p.Ports = port("tcp", 80, 20080, "300.1.1.1") }, errdefs.ErrInvalidArgument},
		{"HostIPNewline", func(p *netdrv.Pod) { p.Ports = port("tcp", 80, 20080, "127.0.0.1\n") }, errdefs.ErrInvalidArgument},
		{"SameHostPortTwice", func(p *netdrv.Pod) {
			p.Ports = append(port("tcp", 80, 20080, ""), port("tcp", 81, 20080, "")...)
		}, errdefs.ErrInvalidArgument},
	} {
		e.Run(tc.name, func(t *testing.T) {
			p := good
			p.ID = good.ID + "x"
			tc.mod(&p)
			_, err := e.drv.Setup(e.ctx, p)
			wantClass(t, "Setup", err, tc.class)
			if v := e.veths(); len(v) != 0 {
				t.Fatalf("failed Setup left ports on the bridge: %v", v)
			}
			if r := e.h.Residue(t, e.cfg); len(r) != 0 {
				t.Fatalf("failed Setup left residue: %v", r)
			}
		})
	}
	// A cancelled request sets nothing up.
	cancelled, cancel := context.WithCancel(e.ctx)
	cancel()
	cp := good
	cp.Ports = port("tcp", 80, e.hostPort(), "")
	if _, err := e.drv.Setup(cancelled, cp); err == nil {
		e.Fatal("Setup with a cancelled context succeeded")
	}
	e.waitVeths(0)
	if r := e.h.Residue(e.T, e.cfg); len(r) != 0 {
		e.Fatalf("cancelled Setup left residue: %v", r)
	}
	// Teardown validates the id too, but tolerates everything else.
	wantClass(e.T, "Teardown with an empty id", e.drv.Teardown(e.ctx, netdrv.Pod{}), errdefs.ErrInvalidArgument)
	// A pod with no host ports, a mapping with host port 0 (ignored) and
	// duplicates of one mapping (merged) is fine.
	p := good
	p.Ports = append(port("tcp", 80, 0, ""), append(port("udp", 53, 20053, ""), port("UDP", 53, 20053, "0.0.0.0")...)...)
	e.setupPod(p)
	e.teardown(p)
	e.assertGone(p)
}

func testPodToPod(e *env) {
	a, b := e.pod(), e.pod()
	ra, rb := e.setupPod(a), e.setupPod(b)
	if ra.IPs[0].Equal(rb.IPs[0]) {
		e.Fatalf("two pods got the same address %v", ra.IPs[0])
	}
	e.echoTCP(a, 8080)
	e.echoTCP(b, 8080)
	if err := talkTCP(b.NetNS, net.JoinHostPort(ra.IPs[0].String(), "8080"), a.ID); err != nil {
		e.Fatalf("pod b to pod a: %v", err)
	}
	if err := talkTCP(a.NetNS, net.JoinHostPort(rb.IPs[0].String(), "8080"), b.ID); err != nil {
		e.Fatalf("pod a to pod b: %v", err)
	}
	e.teardown(a)
	// b keeps working without a.
	if err := talkTCP("", net.JoinHostPort(rb.IPs[0].String(), "8080"), b.ID); err != nil {
		e.Fatalf("host to pod b after a left: %v", err)
	}
	e.teardown(b)
	e.assertGone(a)
	e.assertGone(b)
}

func testHostPortTCP(e *env) {
	hp, local := e.hostPort(), e.hostPort()
	for local == hp {
		local = e.hostPort()
	}
	p := e.pod(
		netdrv.PortMapping{Protocol: "tcp", ContainerPort: 8080, HostPort: hp},
		netdrv.PortMapping{Protocol: "tcp", ContainerPort: 9090, HostPort: local, HostIP: "127.0.0.1"},
	)
	e.setupPod(p)
	e.echoTCP(p, 8080)
	e.echoTCP(p, 9090)
	for _, a := range append(e.hostAddrs(), "127.0.0.1") {
		addr := net.JoinHostPort(a, fmt.Sprint(hp))
		if err := talkTCP("", addr, p.ID); err != nil {
			e.Errorf("host port %s: %v", addr, err)
		}
	}
	if err := talkTCP("", net.JoinHostPort("127.0.0.1", fmt.Sprint(local)), p.ID); err != nil {
		e.Errorf("host port on 127.0.0.1: %v", err)
	}
	// The mapping bound to 127.0.0.1 is not published on the gateway.
	if err := talkTCP("", net.JoinHostPort(e.gateway().String(), fmt.Sprint(local)), p.ID); err == nil {
		e.Errorf("host port bound to 127.0.0.1 answered on %v", e.gateway())
	}
	e.teardown(p)
	// Gone after teardown.
	if err := talkTCP("", net.JoinHostPort("127.0.0.1", fmt.Sprint(hp)), p.ID); err == nil {
		e.Errorf("host port %d still answers after Teardown", hp)
	}
	e.assertGone(p)
}

func testHostPortUDP(e *env) {
	hp := e.hostPort()
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(hp)}
	// A datagram sent before the pod exists leaves a conntrack entry
	// without DNAT for its 5-tuple; a client that keeps its source port
	// (DNS resolvers, game clients) must still reach the pod after Setup.
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		e.Fatal(err)
	}
	defer client.Close()
	if _, err := client.WriteTo([]byte("early"), local); err != nil {
		e.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	p := e.pod(netdrv.PortMapping{Protocol: "udp", ContainerPort: 5353, HostPort: hp})
	e.setupPod(p)
	e.echoUDP(p, 5353)
	if err := exchangeUDP(client, local, p.ID); err != nil {
		e.Errorf("udp host port from a source port used before Setup: %v", err)
	}
	for _, a := range append(e.hostAddrs(), "127.0.0.1") {
		addr := net.JoinHostPort(a, fmt.Sprint(hp))
		if err := talkUDP("", addr, p.ID); err != nil {
			e.Errorf("udp host port %s: %v", addr, err)
		}
	}
	e.teardown(p)
	e.assertGone(p)
}

func testHairpin(e *env) {
	hp := e.hostPort()
	a := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 8080, HostPort: hp})
	b := e.pod()
	e.setupPod(a)
	e.setupPod(b)
	e.echoTCP(a, 8080)
	addr := net.JoinHostPort(e.gateway().String(), fmt.Sprint(hp))
	if err := talkTCP(a.NetNS, addr, a.ID); err != nil {
		e.Fatalf("pod a to its own host port (hairpin): %v", err)
	}
	if err := talkTCP(b.NetNS, addr, a.ID); err != nil {
		e.Fatalf("pod b to pod a's host port: %v", err)
	}
	e.teardown(a)
	e.teardown(b)
}

func testMissingNetNS(e *env) {
	p := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: e.hostPort()})
	e.setupPod(p)
	if err := nspin.Unpin(p.NetNS); err != nil {
		e.Fatal(err)
	}
	if err := e.drv.Teardown(e.ctx, p); err != nil {
		e.Fatalf("Teardown with the netns gone: %v", err)
	}
	e.waitVeths(0)
	e.assertGone(p)
}

func testSetupTwice(e *env) {
	p := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 8080, HostPort: e.hostPort()})
	e.setupPod(p)
	res := e.setupPod(p)
	if v := e.veths(); len(v) != 1 {
		e.Fatalf("bridge ports after Setup twice: %v, want one", v)
	}
	e.echoTCP(p, 8080)
	if err := talkTCP("", net.JoinHostPort(res.IPs[0].String(), "8080"), p.ID); err != nil {
		e.Fatalf("after Setup twice: %v", err)
	}
	e.teardown(p)
	e.assertGone(p)
}

func testExhausted(e *env) {
	// A /30 holds one pod: network, gateway, one address, broadcast.
	e2 := setup(e.T, e.h, 100+e.n, 30)
	a, b := e2.pod(), e2.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: e.hostPort()})
	ra := e2.setupPod(a)
	_, err := e2.drv.Setup(e2.ctx, b)
	wantClass(e2.T, "Setup in a full pool", err, e2.h.ExhaustedClass)
	e2.assertGone(b)
	if v := e2.veths(); len(v) != 1 {
		e2.Fatalf("bridge ports after a failed Setup: %v, want only pod a's", v)
	}
	e2.echoTCP(a, 8080)
	if err := talkTCP("", net.JoinHostPort(ra.IPs[0].String(), "8080"), a.ID); err != nil {
		e2.Fatalf("pod a after b's failed Setup: %v", err)
	}
	// Freed on teardown: b fits now and gets a's address.
	e2.teardown(a)
	rb := e2.setupPod(b)
	if !rb.IPs[0].Equal(ra.IPs[0]) {
		e2.Fatalf("pod b got %v, want the freed %v", rb.IPs[0], ra.IPs[0])
	}
	e2.teardown(b)
}

func testPortConflict(e *env) {
	if !e.h.PortConflicts {
		e.Skip("the driver does not own host port allocation")
	}
	hp := e.hostPort()
	a := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 8080, HostPort: hp})
	ra := e.setupPod(a)
	e.echoTCP(a, 8080)
	for _, tc := range []struct {
		name string
		pm   netdrv.PortMapping
	}{
		{"SameAny", netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: hp}},
		{"OneAddressUnderAny", netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: hp, HostIP: "127.0.0.1"}},
	} {
		b := e.pod(netdrv.PortMapping{Protocol: "udp", ContainerPort: 53, HostPort: e.hostPort()}, tc.pm)
		_, err := e.drv.Setup(e.ctx, b)
		wantClass(e.T, tc.name, err, errdefs.ErrAlreadyExists)
		e.assertGone(b)
	}
	if v := e.veths(); len(v) != 1 {
		e.Fatalf("bridge ports after failed Setups: %v, want only pod a's", v)
	}
	if err := talkTCP("", net.JoinHostPort("127.0.0.1", fmt.Sprint(hp)), a.ID); err != nil {
		e.Fatalf("pod a's host port after conflicts: %v", err)
	}
	// The same port number over UDP, and on one address under a port
	// held on one other address, do not conflict.
	c := e.pod(netdrv.PortMapping{Protocol: "udp", ContainerPort: 53, HostPort: hp})
	e.setupPod(c)
	local := e.hostPort()
	d := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: local, HostIP: "127.0.0.1"})
	f := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: local, HostIP: e.gateway().String()})
	e.setupPod(d)
	e.setupPod(f)
	g := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: local})
	_, err := e.drv.Setup(e.ctx, g)
	wantClass(e.T, "every address over one address", err, errdefs.ErrAlreadyExists)
	for _, p := range []netdrv.Pod{a, c, d, f} {
		e.teardown(p)
	}
	_ = ra
}

func testRestart(e *env) {
	hp := e.hostPort()
	a := e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 8080, HostPort: hp})
	ra := e.setupPod(a)
	e.echoTCP(a, 8080)
	if err := e.drv.Close(); err != nil {
		e.Fatal(err)
	}
	e.open()
	// The pod kept its network and host port across the restart.
	if err := talkTCP("", net.JoinHostPort("127.0.0.1", fmt.Sprint(hp)), a.ID); err != nil {
		e.Fatalf("host port after restart: %v", err)
	}
	b := e.pod()
	rb := e.setupPod(b)
	if rb.IPs[0].Equal(ra.IPs[0]) {
		e.Fatalf("after restart pod b got pod a's address %v", ra.IPs[0])
	}
	e.teardown(a)
	e.teardown(b)
	e.assertGone(a)
}

func testConcurrent(e *env) {
	const n = 8
	pods := make([]netdrv.Pod, n)
	for i := range pods {
		pods[i] = e.pod(netdrv.PortMapping{Protocol: "tcp", ContainerPort: 80, HostPort: e.h.PortBase + 4000 + int32(i)})
	}
	res := make([]netdrv.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = e.drv.Setup(e.ctx, pods[i])
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			e.Fatalf("concurrent Setup %d: %v", i, err)
		}
		ip := res[i].IPs[0].String()
		if seen[ip] {
			e.Fatalf("address %s handed out twice", ip)
		}
		seen[ip] = true
	}
	if v := e.veths(); len(v) != n {
		e.Fatalf("bridge ports %v, want %d", v, n)
	}
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.drv.Teardown(e.ctx, pods[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			e.Fatalf("concurrent Teardown %d: %v", i, err)
		}
	}
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func testLeak(e *env) {
	cycle := func(i int) {
		path := filepath.Join(e.cfg.Dir, "leakns")
		if err := nspin.Pin(e.ctx, nspin.Net, path); err != nil {
			e.Fatal(err)
		}
		p := netdrv.Pod{ID: fmt.Sprintf("leak%04d", i), NetNS: path, Name: "leak", Namespace: "test", UID: "u",
			Ports: []netdrv.PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: e.h.PortBase + 4100 + int32(i%500)}}}
		if _, err := e.drv.Setup(e.ctx, p); err != nil {
			e.Fatalf("cycle %d: Setup: %v", i, err)
		}
		if err := e.drv.Teardown(e.ctx, p); err != nil {
			e.Fatalf("cycle %d: Teardown: %v", i, err)
		}
		if err := nspin.Unpin(path); err != nil {
			e.Fatal(err)
		}
	}
	cycle(-1) // warm up lazily created state (sockets, caches, threads)
	fds, gor := openFDs(e.T), runtime.NumGoroutine()
	start := time.Now()
	for i := 0; i < 100; i++ {
		cycle(i)
	}
	e.Logf("100 setup/teardown cycles in %v", time.Since(start))
	e.waitVeths(0)
	if r := e.h.Residue(e.T, e.cfg); len(r) > 0 {
		e.Fatalf("residue after 100 cycles: %v", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, g := openFDs(e.T), runtime.NumGoroutine()
		if f <= fds && g <= gor {
			break
		}
		if time.Now().After(deadline) {
			e.Fatalf("after 100 cycles: %d open fds (was %d), %d goroutines (was %d)", f, fds, g, gor)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
