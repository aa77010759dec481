package bridge

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/netdrv"
)

// Bolt layout, all under the top-level bucket "netdrv.bridge":
//
//	cidr           the pool CIDR in use (text)
//	runtime_cidr   the pod CIDR set through SetPodCIDR (text), wins over Config.CIDR
//	last           the last address handed out (4 bytes); allocation goes round robin
//	pods/<pod id>  JSON record: address, veth, netns, host ports
//	ips/<4 bytes>  pod id owning the address
//	ports/<proto>/<port>/<host ip or "">  pod id owning the host port
//	veths/<name>   pod id owning the host-side veth name
var (
	bucketTop   = []byte("netdrv.bridge")
	bucketPods  = []byte("pods")
	bucketIPs   = []byte("ips")
	bucketPorts = []byte("ports")
	bucketVeths = []byte("veths")

	keyCIDR        = []byte("cidr")
	keyRuntimeCIDR = []byte("runtime_cidr")
	keyLast        = []byte("last")
)

// errStale reports an existing record for the pod being set up.
var errStale = errors.New("pod already has a network record")

// record is what the driver keeps per pod.
type record struct {
	IP    netip.Addr           `json:"ip"`
	Veth  string               `json:"veth"`
	NetNS string               `json:"netns"`
	Ports []netdrv.PortMapping `json:"ports,omitempty"`
}

// pool is an IPv4 pod CIDR: the gateway is the first host address, pods get
// the addresses after it up to the one before broadcast.
type pool struct {
	prefix      netip.Prefix
	gateway     netip.Addr
	first, last uint32
}

func parsePool(cidr string) (*pool, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR %q: %w", cidr, errdefs.ErrInvalidArgument)
	}
	if !p.Addr().Is4() {
		return nil, fmt.Errorf("pod CIDR %q: the bridge driver is IPv4-only: %w", cidr, errdefs.ErrInvalidArgument)
	}
	if p.Bits() > 30 || p.Bits() < 8 {
		return nil, fmt.Errorf("pod CIDR %q: want a prefix length from /8 to /30: %w", cidr, errdefs.ErrInvalidArgument)
	}
	p = p.Masked()
	net := u32(p.Addr())
	bcast := net | (1<<(32-p.Bits()) - 1)
	return &pool{prefix: p, gateway: addr(net + 1), first: net + 2, last: bcast - 1}, nil
}

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func ipKey(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func portPrefix(pm netdrv.PortMapping) string {
	return pm.Protocol + "/" + strconv.Itoa(int(pm.HostPort)) + "/"
}

func portKey(pm netdrv.PortMapping) []byte { return []byte(portPrefix(pm) + pm.HostIP) }

func initBuckets(tx *bbolt.Tx) error {
	top, err := tx.CreateBucketIfNotExists(bucketTop)
	if err != nil {
		return err
	}
	for _, b := range [][]byte{bucketPods, bucketIPs, bucketPorts, bucketVeths} {
		if _, err := top.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

func getRecord(top *bbolt.Bucket, podID string) (*record, error) {
	v := top.Bucket(bucketPods).Get([]byte(podID))
	if v == nil {
		return nil, nil
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("pod %s: corrupt network record: %w: %w", podID, err, errdefs.ErrDataLoss)
	}
	return &r, nil
}

// reserve allocates an address, claims the host ports and the veth name,
// and writes the pod's record, all in one transaction. It fails with
// errStale when the pod already has a record.
func reserve(tx *bbolt.Tx, p *pool, podID string, rec *record) error {
	top := tx.Bucket(bucketTop)
	pods, ips, ports, veths := top.Bucket(bucketPods), top.Bucket(bucketIPs), top.Bucket(bucketPorts), top.Bucket(bucketVeths)
	if pods.Get([]byte(podID)) != nil {
		return errStale
	}
	if owner := veths.Get([]byte(rec.Veth)); owner != nil {
		return fmt.Errorf("veth name %s of pod %s is taken by pod %s: %w", rec.Veth, podID, owner, errdefs.ErrAlreadyExists)
	}
	for _, pm := range rec.Ports {
		if owner := portOwner(ports, pm); owner != "" {
			return fmt.Errorf("host port %s/%d (host IP %q) is in use by pod %s: %w",
				pm.Protocol, pm.HostPort, pm.HostIP, owner, errdefs.ErrAlreadyExists)
		}
		if err := ports.Put(portKey(pm), []byte(podID)); err != nil {
			return err
		}
	}
	v, err := nextFree(ips, p, top.Get(keyLast))
	if err != nil {
		return err
	}
	rec.IP = addr(v)
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	for _, put := range []struct {
		b    *bbolt.Bucket
		k, v []byte
	}{
		{ips, ipKey(v), []byte(podID)},
		{top, keyLast, ipKey(v)},
		{veths, []byte(rec.Veth), []byte(podID)},
		{pods, []byte(podID), b},
	} {
		if err := put.b.Put(put.k, put.v); err != nil {
			return err
		}
	}
	return nil
}

// portOwner returns the pod holding a host port that overlaps pm: the same
// protocol and port on the same host IP, or either side on every address.
func portOwner(ports *bbolt.Bucket, pm netdrv.PortMapping) string {
	prefix := []byte(portPrefix(pm))
	if pm.HostIP != "" {
		if v := ports.Get(prefix); v != nil { // the port on every address
			return string(v)
		}
		if v := ports.Get(portKey(pm)); v != nil {
			return string(v)
		}
		return ""
	}
	c := ports.Cursor()
	if k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return string(v)
	}
	return ""
}

// nextFree finds the first free address after last, wrapping around.
func nextFree(ips *bbolt.Bucket, p *pool, lastKey []byte) (uint32, error) {
	start := p.first
	if len(lastKey) == 4 {
		if l := binary.BigEndian.Uint32(lastKey); l >= p.first && l < p.last {
			start = l + 1
		}
	}
	scan := func(from, to uint32) (uint32, bool) {
		c := ips.Cursor()
		cand := from
		for k, _ := c.Seek(ipKey(from)); k != nil && cand <= to; k, _ = c.Next() {
			if binary.BigEndian.Uint32(k) != cand {
				break
			}
			cand++
		}
		return cand, cand <= to
	}
	if v, ok := scan(start, p.last); ok {
		return v, nil
	}
	if start > p.first {
		if v, ok := scan(p.first, start-1); ok {
			return v, nil
		}
	}
	return 0, fmt.Errorf("no free address in %s: %w", p.prefix, errdefs.ErrResourceExhausted)
}

// release deletes the pod's record and everything it owns. It returns the
// record (nil when there was none).
func release(tx *bbolt.Tx, podID string) (*record, error) {
	top := tx.Bucket(bucketTop)
	rec, err := getRecord(top, podID)
	if rec == nil || err != nil {
		if err != nil { // a corrupt record still goes
			return nil, top.Bucket(bucketPods).Delete([]byte(podID))
		}
		return nil, nil
	}
	del := func(b *bbolt.Bucket, k []byte) error {
		if string(b.Get(k)) == podID {
			return b.Delete(k)
		}
		return nil
	}
	if rec.IP.Is4() {
		if err := del(top.Bucket(bucketIPs), ipKey(u32(rec.IP))); err != nil {
			return nil, err
		}
	}
	for _, pm := range rec.Ports {
		if err := del(top.Bucket(bucketPorts), portKey(pm)); err != nil {
			return nil, err
		}
	}
	if err := del(top.Bucket(bucketVeths), []byte(rec.Veth)); err != nil {
		return nil, err
	}
	return rec, top.Bucket(bucketPods).Delete([]byte(podID))
}

// records returns every pod record.
func records(tx *bbolt.Tx) (map[string]*record, error) {
	out := map[string]*record{}
	err := tx.Bucket(bucketTop).Bucket(bucketPods).ForEach(func(k, v []byte) error {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return nil // corrupt records are skipped here; Teardown removes them
		}
		out[string(k)] = &r
		return nil
	})
	return out, err
}
