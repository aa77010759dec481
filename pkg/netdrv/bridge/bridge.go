// Package bridge is shim's built-in pod network (the default netdrv
// driver): no CNI plugins, only netlink and nftables.
//
// Per host: a Linux bridge (Config.Bridge, default "shim0") holding the
// gateway address, the first host address of the pod CIDR (Config.CIDR,
// default 10.88.0.0/16, or the CIDR from CRI UpdateRuntimeConfig); sysctls
// net.ipv4.ip_forward=1 and net.ipv4.conf.<bridge>.route_localnet=1 (so the
// host reaches host ports on 127.0.0.1; an input rule stops pods from using
// it to reach host loopback services).
//
// Per pod: a veth pair, the host side named Config.VethPrefix + 8 hex digits
// of SHA-256(pod id) (default "shim1a2b3c4d"), enslaved to the bridge with
// hairpin on; the pod side "eth0" in the pinned namespace with the pod's
// address and a default route via the gateway; loopback up.
//
// State: IPAM and per-pod records live in the daemon's bbolt DB, bucket
// "netdrv.bridge" (layout in ipam.go): an address is never handed out
// twice, is freed on Teardown, and survives daemon restarts. The network,
// gateway and broadcast addresses are never handed out; allocation goes
// round robin so a freed address is not reused at once.
//
// nftables: one table, family ip, owned by the driver (Config.Table,
// default "shim"), built through netlink (github.com/google/nftables):
//
//	map hostports      { type inet_proto . inet_service : ipv4_addr . inet_service }  # host ports on every address
//	map hostports_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }  # on one address
//	chain prerouting  { type nat hook prerouting priority dstnat; fib daddr type local jump hostports }
//	chain output      { type nat hook output priority dstnat; fib daddr type local jump hostports }
//	chain hostports   { dnat ip to ip daddr . meta l4proto . th dport map @hostports_addr
//	                    dnat ip to meta l4proto . th dport map @hostports }
//	chain postrouting { type nat hook postrouting priority srcnat
//	                    ct status dnat ip saddr 127.0.0.0/8 oifname <bridge> masquerade  # 127.0.0.1:hostPort from the host
//	                    ct status dnat ip saddr <cidr> ip daddr <cidr> masquerade        # hairpin, pod to a pod's host port
//	                    ip saddr <cidr> ip daddr != <cidr> ip daddr != 224.0.0.0/4 masquerade }  # egress
//	chain input       { type filter hook input priority filter
//	                    iifname <bridge> ip daddr 127.0.0.0/8 ct status != dnat drop }  # route_localnet guard (CVE-2020-8558)
//
// The chains are static: rewritten in one batch at start and when the pod
// CIDR changes. A pod owns only map elements, one per host port, each with
// the comment "pod=<id>" (see `nft list table ip shim`): Setup adds them
// and Teardown deletes exactly those keys, taken from the pod's bolt
// record, one batch each. A pod without host ports costs no nftables work.
// Setup also deletes UDP conntrack entries for its host ports, so a client
// that sent datagrams before the pod existed reaches it.
//
// At New the driver reconciles: it recreates missing infrastructure,
// re-publishes the host ports of recorded pods, and deletes map elements
// and veths on its bridge that no record owns (leftovers of a crash).
package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/nspin"
	"github.com/shim-cri/shim/pkg/timeline"
)

// Defaults for Config.
const (
	DefaultBridge     = "shim0"
	DefaultCIDR       = "10.88.0.0/16"
	DefaultTable      = "shim"
	DefaultVethPrefix = "shim"
	DefaultMTU        = 1500
)

// Config configures the bridge driver. Zero fields take the defaults.
type Config struct {
	Bridge     string // bridge interface name
	CIDR       string // IPv4 pod CIDR, /8 to /30
	Table      string // nftables table (family ip) owned by the driver
	VethPrefix string // host-side veth name prefix, at most 7 characters
	MTU        int    // MTU of the bridge and the veths
}

func (c *Config) defaults() error {
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if c.CIDR == "" {
		c.CIDR = DefaultCIDR
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.VethPrefix == "" {
		c.VethPrefix = DefaultVethPrefix
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if len(c.Bridge) >= unix.IFNAMSIZ || strings.ContainsAny(c.Bridge, "/ \x00") {
		return fmt.Errorf("bridge name %q: %w", c.Bridge, errdefs.ErrInvalidArgument)
	}
	if len(c.VethPrefix) > unix.IFNAMSIZ-1-8 || strings.ContainsAny(c.VethPrefix, "/ \x00") {
		return fmt.Errorf("veth prefix %q: at most 7 characters: %w", c.VethPrefix, errdefs.ErrInvalidArgument)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return fmt.Errorf("MTU %d: %w", c.MTU, errdefs.ErrInvalidArgument)
	}
	if len(c.Table) > 255 || strings.ContainsAny(c.Table, " \x00") {
		return fmt.Errorf("nftables table %q: %w", c.Table, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Driver is the bridge driver. It implements netdrv.Driver.
type Driver struct {
	cfg Config
	db  *bbolt.DB
	nft *nft

	mu     sync.RWMutex // write: pool change, Close; read: everything else
	pool   *pool
	closed bool

	ensureMu sync.Mutex   // serializes ensure
	brIndex  atomic.Int32 // interface index of the bridge

	rollbackBudget time.Duration // time for a rollback on a fresh context
}

var _ netdrv.Driver = (*Driver)(nil)

// New opens the driver with its state in db (shared with the daemon),
// creates or adopts the bridge and the nftables table, and reconciles
// leftovers of a crash. It needs CAP_NET_ADMIN.
func New(ctx context.Context, cfg Config, db *bbolt.DB) (*Driver, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if db == nil {
		return nil, fmt.Errorf("bridge: no database: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := parsePool(cfg.CIDR); err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, db: db, nft: newNFT(cfg.Table, cfg.Bridge), rollbackBudget: 30 * time.Second}
	var cidr string
	err := db.Update(func(tx *bbolt.Tx) error {
		if err := initBuckets(tx); err != nil {
			return err
		}
		top := tx.Bucket(bucketTop)
		cidr = cfg.CIDR
		if rt := top.Get(keyRuntimeCIDR); rt != nil {
			cidr = string(rt)
		}
		if cur := top.Get(keyCIDR); cur != nil && string(cur) != cidr {
			if top.Bucket(bucketPods).Stats().KeyN > 0 {
				log.G(ctx).Warnf("bridge: pod CIDR change from %s to %s deferred: pods still use %s", cur, cidr, cur)
				cidr = string(cur)
			}
		}
		return top.Put(keyCIDR, []byte(cidr))
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: open state: %w", err)
	}
	p, err := parsePool(cidr)
	if err != nil {
		return nil, err
	}
	d.pool = p
	if err := d.ensure(p); err != nil {
		return nil, err
	}
	if err := d.reconcile(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Name implements netdrv.Driver.
func (d *Driver) Name() string { return "bridge" }

// ensure creates the bridge and the nftables table for pool p. The caller
// holds d.mu (read or write).
func (d *Driver) ensure(p *pool) error {
	d.ensureMu.Lock()
	defer d.ensureMu.Unlock()
	idx, err := ensureBridge(d.cfg.Bridge, d.cfg.MTU, p)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	d.brIndex.Store(int32(idx))
	if err := d.nft.ensure(p); err != nil {
		return fmt.Errorf("bridge: nftables table %s: %w", d.cfg.Table, err)
	}
	return nil
}

// reconcile re-publishes recorded host ports and removes map elements and
// veths on the bridge that no record owns.
func (d *Driver) reconcile(ctx context.Context) error {
	var recs map[string]*record
	if err := d.db.View(func(tx *bbolt.Tx) (err error) { recs, err = records(tx); return err }); err != nil {
		return fmt.Errorf("bridge: read records: %w", err)
	}
	veths := map[string]bool{}
	for _, r := range recs {
		veths[r.Veth] = true
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("bridge: list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "veth" && a.MasterIndex == int(d.brIndex.Load()) && strings.HasPrefix(a.Name, d.cfg.VethPrefix) && !veths[a.Name] {
			log.G(ctx).WithField("veth", a.Name).Info("bridge: removing veth no pod owns")
			if err := unplumb(a.Name); err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
		}
	}
	elems, err := d.nft.listPorts()
	if err != nil {
		return fmt.Errorf("bridge: list host ports: %w", err)
	}
	for _, e := range elems {
		r := recs[e.owner]
		if r != nil && r.IP == e.ip && hasPort(r.Ports, e.pm) {
			continue
		}
		log.G(ctx).WithField(log.FieldPodID, e.owner).Infof("bridge: removing host port %s/%d no pod owns", e.pm.Protocol, e.pm.HostPort)
		if err := d.nft.delPorts(e.owner, []netdrv.PortMapping{e.pm}); err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
	}
	for id, r := range recs {
		if err := d.nft.addPorts(id, r.IP, r.Ports); err != nil {
			return fmt.Errorf("bridge: republish host ports of pod %s: %w", id, err)
		}
	}
	return nil
}

func hasPort(ports []netdrv.PortMapping, pm netdrv.PortMapping) bool {
	for _, p := range ports {
		if p == pm {
			return true
		}
	}
	return false
}

// Ready implements netdrv.Driver: the bridge must exist and be up.
func (d *Driver) Ready(ctx context.Context) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return fmt.Errorf("bridge driver closed: %w", errdefs.ErrUnavailable)
	}
	l, err := netlink.LinkByName(d.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w: %w", d.cfg.Bridge, err, errdefs.ErrUnavailable)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("bridge %s is down: %w", d.cfg.Bridge, errdefs.ErrUnavailable)
	}
	return nil
}

// The phases of Setup in a timed job (see pkg/timeline).
const (
	PhaseIPAM  = "net_ipam"  // the pod's address reserved in the driver's db (a retry's leftovers removed)
	PhaseVeth  = "net_veth"  // veth pair made, one end moved into the pod, addresses, routes, links up
	PhasePorts = "net_ports" // nftables host-port rules (nothing without host ports)
)

// Setup implements netdrv.Driver.
func (d *Driver) Setup(ctx context.Context, pod netdrv.Pod) (_ netdrv.Result, retErr error) {
	ports, err := pod.Validate()
	if err != nil {
		return netdrv.Result{}, err
	}
	ctx = log.WithFields(ctx, map[string]any{log.FieldPodID: pod.ID})
	ports = ipv4Ports(ctx, ports)
	fd, err := openNetNS(pod.NetNS)
	if err != nil {
		return netdrv.Result{}, err
	}
	defer unix.Close(fd)

	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return netdrv.Result{}, fmt.Errorf("bridge driver closed: %w", errdefs.ErrUnavailable)
	}
	p := d.pool
	rec := &record{Veth: vethName(d.cfg.VethPrefix, pod.ID), NetNS: pod.NetNS, Ports: ports}
	err = d.db.Update(func(tx *bbolt.Tx) error { return reserve(tx, p, pod.ID, rec) })
	if errors.Is(err, errStale) {
		// Set up before (a retry, or a crash mid-Setup): start over.
		if err := d.teardown(ctx, pod.ID, true); err != nil {
			return netdrv.Result{}, err
		}
		err = d.db.Update(func(tx *bbolt.Tx) error { return reserve(tx, p, pod.ID, rec) })
	}
	if err != nil {
		return netdrv.Result{}, fmt.Errorf("bridge: pod %s: %w", pod.ID, err)
	}
	timeline.Mark(ctx, PhaseIPAM)
	published := false
	defer func() {
		if retErr == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.rollbackBudget)
		defer cancel()
		if err := d.teardown(rctx, pod.ID, published); err != nil {
			log.G(ctx).WithError(err).Error("bridge: rollback of failed setup")
		}
	}()
	if err := ctx.Err(); err != nil {
		return netdrv.Result{}, err
	}
	err = plumb(fd, pod.NetNS, rec.Veth, int(d.brIndex.Load()), d.cfg.MTU, rec.IP, p)
	if err != nil && !d.bridgeIntact() {
		// Someone deleted the bridge: recreate it and try once more.
		if err := d.ensure(p); err != nil {
			return netdrv.Result{}, err
		}
		err = plumb(fd, pod.NetNS, rec.Veth, int(d.brIndex.Load()), d.cfg.MTU, rec.IP, p)
	}
	if err != nil {
		return netdrv.Result{}, fmt.Errorf("bridge: pod %s: %w", pod.ID, err)
	}
	timeline.Mark(ctx, PhaseVeth)
	if err := d.publish(ctx, pod.ID, rec); err != nil {
		return netdrv.Result{}, fmt.Errorf("bridge: pod %s: host ports: %w", pod.ID, err)
	}
	timeline.Mark(ctx, PhasePorts)
	published = true
	return netdrv.Result{IPs: []net.IP{rec.IP.AsSlice()}, Interface: podIfName, Gateway: p.gateway.AsSlice()}, nil
}

// publish adds the pod's host ports and forgets stale UDP conntrack
// entries for them, so datagrams sent before the pod existed do not keep
// bypassing the new DNAT.
func (d *Driver) publish(ctx context.Context, podID string, rec *record) error {
	if len(rec.Ports) == 0 {
		return nil
	}
	err := d.nft.addPorts(podID, rec.IP, rec.Ports)
	if errors.Is(err, unix.ENOENT) { // the table was deleted under us
		if err = d.ensure(d.pool); err == nil {
			err = d.nft.addPorts(podID, rec.IP, rec.Ports)
		}
	}
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
		// A map element nobody recorded holds the port (a leftover the next
		// start reconciles away, or someone editing our table).
		return fmt.Errorf("%w: %w", err, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return err
	}
	for _, pm := range rec.Ports {
		if pm.Protocol != "udp" {
			continue
		}
		f := &netlink.ConntrackFilter{}
		f.AddProtocol(unix.IPPROTO_UDP)
		f.AddPort(netlink.ConntrackOrigDstPort, uint16(pm.HostPort))
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			log.G(ctx).WithError(err).Warnf("bridge: flush conntrack for udp/%d", pm.HostPort)
		}
	}
	return nil
}

// bridgeIntact reports whether the bridge still exists with the index the
// driver knows.
func (d *Driver) bridgeIntact() bool {
	l, err := netlink.LinkByName(d.cfg.Bridge)
	return err == nil && l.Attrs().Index == int(d.brIndex.Load()) && l.Attrs().Flags&net.FlagUp != 0
}

// ipv4Ports drops IPv6 host IPs: the bridge driver is IPv4-only (CNI
// portmap skips mappings of the other family the same way).
func ipv4Ports(ctx context.Context, ports []netdrv.PortMapping) []netdrv.PortMapping {
	out := ports[:0:0]
	for _, pm := range ports {
		if strings.Contains(pm.HostIP, ":") {
			log.G(ctx).Warnf("bridge: ignoring host port %s/%d on IPv6 address %s (IPv4-only driver)", pm.Protocol, pm.HostPort, pm.HostIP)
			continue
		}
		out = append(out, pm)
	}
	return out
}

func openNetNS(path string) (int, error) {
	if err := nspin.Check(nspin.Net, path); err != nil {
		return -1, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open netns %s: %w: %w", path, err, errdefs.ErrFailedPrecondition)
	}
	return fd, nil
}

// Teardown implements netdrv.Driver.
func (d *Driver) Teardown(ctx context.Context, pod netdrv.Pod) error {
	if err := netdrv.ValidateID(pod.ID); err != nil {
		return err
	}
	ctx = log.WithFields(ctx, map[string]any{log.FieldPodID: pod.ID})
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return fmt.Errorf("bridge driver closed: %w", errdefs.ErrUnavailable)
	}
	return d.teardown(ctx, pod.ID, true)
}

// teardown removes the pod's host ports (unless ports is false: a rollback
// after the kernel refused them, when the keys may be someone else's), veth
// and record, the record last so a failure leaves it for a retry.
func (d *Driver) teardown(ctx context.Context, podID string, ports bool) error {
	var rec *record
	err := d.db.View(func(tx *bbolt.Tx) (err error) {
		rec, err = getRecord(tx.Bucket(bucketTop), podID)
		return err
	})
	if err != nil && !errdefs.Is(err, errdefs.ErrDataLoss) {
		return fmt.Errorf("bridge: pod %s: %w", podID, err)
	}
	veth := vethName(d.cfg.VethPrefix, podID)
	if rec != nil {
		veth = rec.Veth
	}
	// Both kernel deletions wait for RCU grace periods (~10 ms each):
	// overlap them.
	portErr := make(chan error, 1)
	if ports && rec != nil && len(rec.Ports) > 0 {
		go func() { portErr <- d.nft.delPorts(podID, rec.Ports) }()
	} else {
		portErr <- nil
	}
	var linkErr error
	if rec != nil || err != nil { // no record: the veth, if any, is another pod's or nobody's
		linkErr = unplumb(veth)
	}
	if err := <-portErr; err != nil {
		return fmt.Errorf("bridge: pod %s: remove host ports: %w", podID, err)
	}
	if linkErr != nil {
		return fmt.Errorf("bridge: pod %s: %w", podID, linkErr)
	}
	if err := d.db.Update(func(tx *bbolt.Tx) error { _, err := release(tx, podID); return err }); err != nil {
		return fmt.Errorf("bridge: pod %s: free address: %w", podID, err)
	}
	return nil
}

// SetPodCIDR implements netdrv.Driver: it switches the pool to cidr. An
// empty cidr or the current one is a no-op; changing it while pods hold
// addresses fails with ErrFailedPrecondition.
func (d *Driver) SetPodCIDR(ctx context.Context, cidr string) error {
	if cidr == "" {
		return nil
	}
	// kubelet may send a comma-separated dual-stack list: use the IPv4 one.
	var v4 string
	for _, c := range strings.Split(cidr, ",") {
		c = strings.TrimSpace(c)
		if pfx, err := netip.ParsePrefix(c); err == nil && pfx.Addr().Is4() {
			v4 = c
			break
		}
	}
	if v4 == "" {
		return fmt.Errorf("bridge: pod CIDR %q has no IPv4 prefix: %w", cidr, errdefs.ErrInvalidArgument)
	}
	p, err := parsePool(v4)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("bridge driver closed: %w", errdefs.ErrUnavailable)
	}
	if p.prefix == d.pool.prefix {
		return d.db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketTop).Put(keyRuntimeCIDR, []byte(p.prefix.String()))
		})
	}
	err = d.db.Update(func(tx *bbolt.Tx) error {
		top := tx.Bucket(bucketTop)
		if n := top.Bucket(bucketPods).Stats().KeyN; n > 0 {
			return fmt.Errorf("bridge: cannot change the pod CIDR from %s to %s: %d pods hold addresses: %w",
				d.pool.prefix, p.prefix, n, errdefs.ErrFailedPrecondition)
		}
		if err := top.Put(keyRuntimeCIDR, []byte(p.prefix.String())); err != nil {
			return err
		}
		return top.Put(keyCIDR, []byte(p.prefix.String()))
	})
	if err != nil {
		return err
	}
	d.pool = p
	if err := d.ensure(p); err != nil {
		return err
	}
	log.G(ctx).Infof("bridge: pod CIDR is now %s", p.prefix)
	return nil
}

// CIDR returns the pod CIDR in use.
func (d *Driver) CIDR() string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.pool.prefix.String()
}

// Close implements netdrv.Driver. The bridge, the table and the pods'
// networks stay: pods outlive the daemon.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// Inventory lists every per-pod object the driver has on the host and in
// its state, one line each, naming the pod: address, host port and veth
// claims in bolt, host port map elements, and veths on the bridge. It is
// empty when no pod is networked (leak tests, diagnostics).
func (d *Driver) Inventory() ([]string, error) {
	var out []string
	err := d.db.View(func(tx *bbolt.Tx) error {
		top := tx.Bucket(bucketTop)
		for _, b := range [][]byte{bucketPods, bucketIPs, bucketPorts, bucketVeths} {
			err := top.Bucket(b).ForEach(func(k, v []byte) error {
				switch string(b) {
				case "pods":
					out = append(out, fmt.Sprintf("record pod=%s", k))
				case "ips":
					if len(k) == 4 {
						k = []byte(addr(binary.BigEndian.Uint32(k)).String())
					}
					out = append(out, fmt.Sprintf("address %s pod=%s", k, v))
				default:
					out = append(out, fmt.Sprintf("%s %s pod=%s", strings.TrimSuffix(string(b), "s"), k, v))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	elems, err := d.nft.listPorts()
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("bridge: list host ports: %w", err)
	}
	for _, e := range elems {
		out = append(out, fmt.Sprintf("nftables %s/%d host IP %q -> %s:%d pod=%s", e.pm.Protocol, e.pm.HostPort, e.pm.HostIP, e.ip, e.pm.ContainerPort, e.owner))
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("bridge: list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == int(d.brIndex.Load()) && l.Type() == "veth" {
			out = append(out, "veth "+l.Attrs().Name)
		}
	}
	return out, nil
}

// Destroy removes the bridge and the nftables table, for tests and
// uninstall. Pods still attached lose their network; their records stay.
func (d *Driver) Destroy() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var errs []error
	if l, err := netlink.LinkByName(d.cfg.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", d.cfg.Bridge, err))
		}
	}
	if err := d.nft.deleteTable(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
