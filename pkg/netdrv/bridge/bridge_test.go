package bridge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/netdrv/testsuite"
	"github.com/shim-cri/shim/pkg/nspin"
)

func testTable(bridge string) string { return "shimtest_" + bridge }

func testConfig(cfg testsuite.Config) Config {
	return Config{Bridge: cfg.Bridge, CIDR: cfg.CIDR, Table: testTable(cfg.Bridge), VethPrefix: "sht"}
}

func TestSuite(t *testing.T) {
	testsuite.Run(t, testsuite.Harness{
		New: func(t *testing.T, cfg testsuite.Config) netdrv.Driver {
			d, err := New(context.Background(), testConfig(cfg), cfg.DB)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Destroy: func(t *testing.T, cfg testsuite.Config) {
			destroy(t, cfg.Bridge, testTable(cfg.Bridge))
		},
		Residue: func(t *testing.T, cfg testsuite.Config) []string {
			return residue(t, cfg.DB, testTable(cfg.Bridge), cfg.Bridge)
		},
		PortConflicts:  true,
		ExhaustedClass: errdefs.ErrResourceExhausted,
		BridgePrefix:   "shtb",
		Net:            "10.213",
		PortBase:       20000,
	})
}

func destroy(t *testing.T, bridge, table string) {
	if l, err := netlink.LinkByName(bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("delete bridge %s: %v", bridge, err)
		}
	}
	if err := newNFT(table, bridge).deleteTable(); err != nil {
		t.Error(err)
	}
}

// residue lists every per-pod item in bolt and in the nftables maps.
func residue(t *testing.T, db *bbolt.DB, table, bridge string) []string {
	var out []string
	err := db.View(func(tx *bbolt.Tx) error {
		top := tx.Bucket(bucketTop)
		if top == nil {
			return nil
		}
		for _, b := range [][]byte{bucketPods, bucketIPs, bucketPorts, bucketVeths} {
			top.Bucket(b).ForEach(func(k, v []byte) error {
				if string(b) == "ips" {
					k = []byte(addr(uint32(k[0])<<24 | uint32(k[1])<<16 | uint32(k[2])<<8 | uint32(k[3])).String())
				}
				if string(b) == "pods" {
					v = k
				}
				out = append(out, fmt.Sprintf("bolt %s/%s = %s", b, k, v))
				return nil
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	elems, err := newNFT(table, bridge).listPorts()
	if err != nil {
		t.Fatalf("list nftables maps: %v", err)
	}
	for _, e := range elems {
		out = append(out, fmt.Sprintf("nft %s/%d on %q -> %s:%d pod=%s", e.pm.Protocol, e.pm.HostPort, e.pm.HostIP, e.ip, e.pm.ContainerPort, e.owner))
	}
	return out
}

func openDB(t *testing.T) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(initBuckets); err != nil {
		t.Fatal(err)
	}
	return db
}

// ---- IPAM, no root needed ----

func TestParsePool(t *testing.T) {
	p, err := parsePool("10.88.7.9/16")
	if err != nil {
		t.Fatal(err)
	}
	if p.prefix.String() != "10.88.0.0/16" || p.gateway.String() != "10.88.0.1" ||
		addr(p.first).String() != "10.88.0.2" || addr(p.last).String() != "10.88.255.254" {
		t.Fatalf("pool %+v", p)
	}
	p, err = parsePool("10.0.0.4/30")
	if err != nil || addr(p.first) != netip.MustParseAddr("10.0.0.6") || p.first != p.last {
		t.Fatalf("/30 pool %+v, %v: want exactly 10.0.0.6", p, err)
	}
	for _, bad := range []string{"", "10.0.0.0", "10.0.0.0/31", "10.0.0.0/32", "10.0.0.0/7", "fd00::/64", "10.0.0.0/24\n", "x/24"} {
		if _, err := parsePool(bad); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("parsePool(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestIPAM(t *testing.T) {
	db := openDB(t)
	p, _ := parsePool("10.1.0.0/29") // .2 to .6: five addresses
	alloc := func(id string, ports ...netdrv.PortMapping) (netip.Addr, error) {
		rec := &record{Veth: vethName("x", id), Ports: ports}
		err := db.Update(func(tx *bbolt.Tx) error { return reserve(tx, p, id, rec) })
		return rec.IP, err
	}
	free := func(id string) {
		if err := db.Update(func(tx *bbolt.Tx) error { _, err := release(tx, id); return err }); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[netip.Addr]bool{}
	for i := 0; i < 5; i++ {
		ip, err := alloc(fmt.Sprint("pod", i))
		if err != nil {
			t.Fatalf("alloc %d: %v", i, err)
		}
		if seen[ip] || !p.prefix.Contains(ip) || ip == p.gateway || ip.String() == "10.1.0.7" || ip.String() == "10.1.0.0" {
			t.Fatalf("alloc %d got %v (seen %v)", i, ip, seen)
		}
		seen[ip] = true
	}
	if _, err := alloc("pod5"); !errdefs.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("alloc in a full pool: %v, want resource exhausted", err)
	}
	if _, err := alloc("pod0"); !errors.Is(err, errStale) {
		t.Fatalf("alloc for a pod with a record: %v, want errStale", err)
	}
	// Round robin: freeing .3 and .5 then allocating gives .3 (the scan
	// wraps from the last address handed out, .6).
	free("pod1")
	free("pod3")
	ip, err := alloc("pod6")
	if err != nil || ip.String() != "10.1.0.3" {
		t.Fatalf("after freeing .3 and .5: got %v, %v; want 10.1.0.3", ip, err)
	}
	ip, err = alloc("pod7")
	if err != nil || ip.String() != "10.1.0.5" {
		t.Fatalf("next: got %v, %v; want 10.1.0.5 (round robin)", ip, err)
	}
	// Survives reopening the database.
	path := db.Path()
	db.Close()
	db2, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	db = db2
	if _, err := alloc("pod8"); !errdefs.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("after reopen the pool must still be full: %v", err)
	}
	for _, id := range []string{"pod0", "pod2", "pod4", "pod6", "pod7", "unknown"} {
		free(id)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		top := tx.Bucket(bucketTop)
		for _, b := range [][]byte{bucketPods, bucketIPs, bucketPorts, bucketVeths} {
			if n := top.Bucket(b).Stats().KeyN; n != 0 {
				return fmt.Errorf("bucket %s has %d keys after freeing everything", b, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPortClaims(t *testing.T) {
	db := openDB(t)
	p, _ := parsePool("10.2.0.0/24")
	alloc := func(id string, ports ...netdrv.PortMapping) error {
		rec := &record{Veth: vethName("x", id), Ports: ports}
		return db.Update(func(tx *bbolt.Tx) error { return reserve(tx, p, id, rec) })
	}
	tcp := func(port int32, ip string) netdrv.PortMapping {
		return netdrv.PortMapping{Protocol: "tcp", ContainerPort: 1, HostPort: port, HostIP: ip}
	}
	udp := tcp(80, "")
	udp.Protocol = "udp"
	steps := []struct {
		id    string
		ports []netdrv.PortMapping
		ok    bool
	}{
		{"a", []netdrv.PortMapping{tcp(80, "")}, true},
		{"b", []netdrv.PortMapping{tcp(80, "")}, false},
		{"c", []netdrv.PortMapping{tcp(80, "127.0.0.1")}, false},
		{"d", []netdrv.PortMapping{udp}, true},
		{"e", []netdrv.PortMapping{tcp(8080, "127.0.0.1")}, true},
		{"f", []netdrv.PortMapping{tcp(8080, "10.0.0.1")}, true},
		{"g", []netdrv.PortMapping{tcp(8080, "")}, false},
		{"h", []netdrv.PortMapping{tcp(808, ""), tcp(8080, "10.0.0.1")}, false}, // all or nothing
		{"i", []netdrv.PortMapping{tcp(808, "")}, true},
	}
	for _, s := range steps {
		err := alloc(s.id, s.ports...)
		if s.ok && err != nil {
			t.Fatalf("pod %s %v: %v", s.id, s.ports, err)
		}
		if !s.ok && !errdefs.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatalf("pod %s %v: %v, want already exists", s.id, s.ports, err)
		}
	}
	// Freeing a releases port 80 on every address.
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := release(tx, "a"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := alloc("c", tcp(80, "127.0.0.1")); err != nil {
		t.Fatalf("after freeing: %v", err)
	}
}

func TestVethName(t *testing.T) {
	a, b := vethName("shim", "pod-a"), vethName("shim", "pod-b")
	if a == b || len(a) != 12 || a != vethName("shim", "pod-a") {
		t.Fatalf("veth names %q %q: want distinct, deterministic, 12 characters", a, b)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{Bridge: "averyveryverylongname"},
		{VethPrefix: "toolongx"},
		{MTU: 100},
		{CIDR: "fd00::/64"},
		{Bridge: "bad/name"},
	} {
		_, err := New(context.Background(), c, openDB(t))
		if !errdefs.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(%+v) = %v, want invalid argument", c, err)
		}
	}
}

// ---- driver-specific, root ----

func needRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

func newTestDriver(t *testing.T, bridge, cidr string, db *bbolt.DB) *Driver {
	t.Helper()
	t.Cleanup(func() { destroy(t, bridge, testTable(bridge)) })
	d, err := New(context.Background(), Config{Bridge: bridge, CIDR: cidr, Table: testTable(bridge), VethPrefix: "sht"}, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func pinNS(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ns")
	if err := nspin.Pin(context.Background(), nspin.Net, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nspin.Unpin(path) })
	return path
}

func TestSetPodCIDR(t *testing.T) {
	needRoot(t)
	db := openDB(t)
	d := newTestDriver(t, "shtc1", "10.213.200.0/24", db)
	ctx := context.Background()
	if err := d.SetPodCIDR(ctx, ""); err != nil {
		t.Fatalf("empty CIDR: %v", err)
	}
	if err := d.SetPodCIDR(ctx, "bogus"); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bogus CIDR: %v", err)
	}
	pod := netdrv.Pod{ID: "cidrpod", NetNS: pinNS(t)}
	if _, err := d.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := d.SetPodCIDR(ctx, "10.213.201.0/24"); !errdefs.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("CIDR change with a pod: %v, want failed precondition", err)
	}
	if err := d.SetPodCIDR(ctx, "10.213.200.0/24"); err != nil {
		t.Fatalf("same CIDR with a pod: %v", err)
	}
	if err := d.Teardown(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// Dual-stack list: the IPv4 prefix is used.
	if err := d.SetPodCIDR(ctx, "fd00:1::/64,10.213.201.0/24"); err != nil {
		t.Fatal(err)
	}
	res, err := d.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Teardown(ctx, pod)
	if !netip.MustParsePrefix("10.213.201.0/24").Contains(netip.MustParseAddr(res.IPs[0].String())) {
		t.Fatalf("pod got %v after the CIDR change", res.IPs[0])
	}
	br, _ := netlink.LinkByName("shtc1")
	addrs, _ := netlink.AddrList(br, 2)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.213.201.1/24" {
		t.Fatalf("bridge addresses %v, want only 10.213.201.1/24", addrs)
	}
	// The runtime CIDR survives a restart even though Config says otherwise.
	d.Close()
	d2, err := New(ctx, Config{Bridge: "shtc1", CIDR: "10.213.200.0/24", Table: testTable("shtc1"), VethPrefix: "sht"}, db)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if d2.CIDR() != "10.213.201.0/24" {
		t.Fatalf("after restart CIDR %s, want the runtime one", d2.CIDR())
	}
	if err := d2.Teardown(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// TestReconcile: state the driver does not own any more (a crash between
// steps) is removed at start, and recorded host ports are published again.
func TestReconcile(t *testing.T) {
	needRoot(t)
	db := openDB(t)
	d := newTestDriver(t, "shtc2", "10.213.202.0/24", db)
	ctx := context.Background()
	pod := netdrv.Pod{ID: "kept", NetNS: pinNS(t), Ports: []netdrv.PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 24001}}}
	if _, err := d.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	defer d.Teardown(ctx, pod)
	lost := netdrv.Pod{ID: "lost", NetNS: pinNS(t), Ports: []netdrv.PortMapping{{Protocol: "udp", ContainerPort: 53, HostPort: 24002}}}
	if _, err := d.Setup(ctx, lost); err != nil {
		t.Fatal(err)
	}
	// Forget "lost" in bolt only, and drop "kept"'s map element.
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := release(tx, "lost"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := d.nft.delPorts("kept", []netdrv.PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 24001}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2, err := New(ctx, Config{Bridge: "shtc2", CIDR: "10.213.202.0/24", Table: testTable("shtc2"), VethPrefix: "sht"}, db)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	r := residue(t, db, testTable("shtc2"), "shtc2")
	for _, item := range r {
		if strings.Contains(item, "lost") {
			t.Fatalf("reconcile kept state of the forgotten pod: %v", r)
		}
	}
	if _, err := netlink.LinkByName(vethName("sht", "lost")); err == nil {
		t.Fatalf("reconcile kept the forgotten pod's veth")
	}
	elems, _ := d2.nft.listPorts()
	if len(elems) != 1 || elems[0].owner != "kept" || elems[0].pm.HostPort != 24001 {
		t.Fatalf("host ports after reconcile: %+v, want kept's 24001", elems)
	}
	if err := d2.Teardown(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// TestRollbackAfterPlumb: a failure after the veth exists (a host port
// element nobody recorded, with other data: the kernel refuses it) rolls
// back the veth, the address and the port claims.
func TestRollbackAfterPlumb(t *testing.T) {
	needRoot(t)
	db := openDB(t)
	d := newTestDriver(t, "shtc4", "10.213.204.0/24", db)
	ctx := context.Background()
	ghost := netdrv.PortMapping{Protocol: "tcp", ContainerPort: 9, HostPort: 24004}
	if err := d.nft.addPorts("ghost", netip.MustParseAddr("10.213.204.99"), []netdrv.PortMapping{ghost}); err != nil {
		t.Fatal(err)
	}
	pod := netdrv.Pod{ID: "victim", NetNS: pinNS(t), Ports: []netdrv.PortMapping{
		{Protocol: "udp", ContainerPort: 53, HostPort: 24005},
		{Protocol: "tcp", ContainerPort: 80, HostPort: 24004},
	}}
	if _, err := d.Setup(ctx, pod); !errdefs.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("Setup over a conflicting kernel element: %v, want already exists", err)
	}
	if _, err := netlink.LinkByName(vethName("sht", "victim")); err == nil {
		t.Fatal("rollback left the veth")
	}
	r := residue(t, db, testTable("shtc4"), "shtc4")
	if len(r) != 1 || !strings.Contains(r[0], "pod=ghost") {
		t.Fatalf("after rollback: %v, want only the ghost element", r)
	}
	err := nspin.Do(nspin.Net, pod.NetNS, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			return errors.New("eth0 left in the pod netns")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The address went back to the pool: the next pod may use it.
	if err := d.nft.delPorts("ghost", []netdrv.PortMapping{ghost}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Setup(ctx, pod); err != nil {
		t.Fatalf("Setup after the conflict is gone: %v", err)
	}
	if err := d.Teardown(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

func TestInventory(t *testing.T) {
	needRoot(t)
	d := newTestDriver(t, "shtc5", "10.213.205.0/24", openDB(t))
	ctx := context.Background()
	if inv, err := d.Inventory(); err != nil || len(inv) != 0 {
		t.Fatalf("Inventory before any pod: %v, %v", inv, err)
	}
	pod := netdrv.Pod{ID: "inv", NetNS: pinNS(t), Ports: []netdrv.PortMapping{{Protocol: "udp", ContainerPort: 53, HostPort: 24006, HostIP: "127.0.0.1"}}}
	if _, err := d.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	inv, err := d.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"record pod=inv", "address 10.213.205.2 pod=inv", "port udp/24006/127.0.0.1 pod=inv",
		"veth " + vethName("sht", "inv") + " pod=inv", "pod=inv", "veth " + vethName("sht", "inv")}
	if len(inv) != len(want) {
		t.Fatalf("Inventory = %q, want %d items like %q", inv, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(inv[i], w) {
			t.Errorf("Inventory[%d] = %q, want it to contain %q", i, inv[i], w)
		}
	}
	if err := d.Teardown(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if inv, err := d.Inventory(); err != nil || len(inv) != 0 {
		t.Fatalf("Inventory after Teardown: %v, %v", inv, err)
	}
}

// TestEgressMasquerade: a pod reaching beyond the host leaves with the
// host's address. "Beyond" is a network namespace of the test's, wired to
// the host with a veth, so no traffic leaves the machine.
func TestEgressMasquerade(t *testing.T) {
	needRoot(t)
	d := newTestDriver(t, "shtc6", "10.213.206.0/24", openDB(t))
	ctx := context.Background()
	outside := pinNS(t)
	fd, err := os.Open(outside)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "shtout6", TxQLen: -1}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(fd.Fd()), PeerTxQLen: -1}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(link)
	hostSide := &netlink.Addr{IPNet: ipnet(netip.MustParseAddr("10.213.99.1"), 30)}
	if err := netlink.AddrAdd(link, hostSide); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	err = nspin.Do(nspin.Net, outside, func() error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(netip.MustParseAddr("10.213.99.2"), 30)}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "10.213.99.2:8080")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	pod := netdrv.Pod{ID: "egress", NetNS: pinNS(t)}
	res, err := d.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Teardown(ctx, pod)
	var seen string
	err = nspin.Do(nspin.Net, pod.NetNS, func() error {
		c, err := net.DialTimeout("tcp4", "10.213.99.2:8080", 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		seen, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Fatalf("pod to the outside: %v", err)
	}
	if strings.TrimSpace(seen) != "10.213.99.1" {
		t.Fatalf("the outside saw the pod as %q, want the host's 10.213.99.1 (pod is %v)", strings.TrimSpace(seen), res.IPs[0])
	}
}

// TestBridgeRecreated: the bridge deleted under the driver is recreated by
// the next Setup.
func TestBridgeRecreated(t *testing.T) {
	needRoot(t)
	db := openDB(t)
	d := newTestDriver(t, "shtc3", "10.213.203.0/24", db)
	ctx := context.Background()
	l, _ := netlink.LinkByName("shtc3")
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := d.Ready(ctx); err == nil {
		t.Fatal("Ready with the bridge gone")
	}
	pod := netdrv.Pod{ID: "again", NetNS: pinNS(t), Ports: []netdrv.PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 24003}}}
	if _, err := d.Setup(ctx, pod); err != nil {
		t.Fatalf("Setup with the bridge gone: %v", err)
	}
	if err := d.Ready(ctx); err != nil {
		t.Fatalf("Ready after Setup recreated the bridge: %v", err)
	}
	if err := d.Teardown(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSetupTeardown measures one pod network setup and teardown with a
// host port (the pod start hot path).
func BenchmarkSetupTeardown(b *testing.B) {
	if os.Getuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	d, err := New(context.Background(), Config{Bridge: "shtbench", CIDR: "10.213.250.0/24", Table: testTable("shtbench"), VethPrefix: "sht"}, db)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Destroy()
	path := filepath.Join(dir, "ns")
	if err := nspin.Pin(context.Background(), nspin.Net, path); err != nil {
		b.Fatal(err)
	}
	defer nspin.Unpin(path)
	pod := netdrv.Pod{ID: "bench", NetNS: path, Ports: []netdrv.PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 24999}}}
	var setup, teardown time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := d.Setup(context.Background(), pod); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := d.Teardown(context.Background(), pod); err != nil {
			b.Fatal(err)
		}
		setup += t1.Sub(t0)
		teardown += time.Since(t1)
	}
	b.ReportMetric(float64(setup.Microseconds())/float64(b.N), "setup-µs/op")
	b.ReportMetric(float64(teardown.Microseconds())/float64(b.N), "teardown-µs/op")
}
