package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/netdrv"
)

// The nftables layout is documented in the package comment (bridge.go).

const (
	setAny  = "hostports"
	setAddr = "hostports_addr"
	ipsDNAT = 0x20 // IPS_DST_NAT in ct status
)

var (
	keyAny  = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	keyAddr = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	mapData = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
)

type nft struct {
	table  *nftables.Table
	bridge string
	any    *nftables.Set
	addr   *nftables.Set
}

func newNFT(table, bridge string) *nft {
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
	return &nft{
		table:  t,
		bridge: bridge,
		any:    &nftables.Set{Table: t, Name: setAny, IsMap: true, Concatenation: true, KeyType: keyAny, DataType: mapData, Comment: "shim host ports on every address"},
		addr:   &nftables.Set{Table: t, Name: setAddr, IsMap: true, Concatenation: true, KeyType: keyAddr, DataType: mapData, Comment: "shim host ports on one address"},
	}
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func protoNum(proto string) byte {
	switch proto {
	case "udp":
		return unix.IPPROTO_UDP
	case "sctp":
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

func be16pad(v int32) []byte { return []byte{byte(v >> 8), byte(v), 0, 0} }

// element is the map element publishing pm to the pod address ip.
func (n *nft) element(podID string, ip netip.Addr, pm netdrv.PortMapping, withData bool) (*nftables.Set, nftables.SetElement) {
	key := append([]byte{protoNum(pm.Protocol), 0, 0, 0}, be16pad(pm.HostPort)...)
	set := n.any
	if pm.HostIP != "" {
		a := netip.MustParseAddr(pm.HostIP).As4()
		key = append(a[:], key...)
		set = n.addr
	}
	el := nftables.SetElement{Key: key}
	if withData {
		a := ip.As4()
		el.Val = append(a[:], be16pad(pm.ContainerPort)...)
		el.Comment = "pod=" + podID
	}
	return set, el
}

// ensure creates the table, maps and chains if missing and (re)writes the
// static rules for pool p, in one batch. Existing map elements are kept.
func (n *nft) ensure(p *pool) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.AddTable(n.table)
	for _, s := range []*nftables.Set{n.any, n.addr} {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		ch := &nftables.Chain{Name: name, Table: n.table}
		if hook != nil {
			ch.Type, ch.Hooknum, ch.Priority, ch.Policy = typ, hook, prio, &accept
		}
		ch = c.AddChain(ch)
		c.FlushChain(ch)
		return ch
	}
	hostports := chain("hostports", "", nil, nil)
	pre := chain("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	out := chain("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)

	for _, r := range n.rules(p, hostports, pre, out, post, in) {
		c.AddRule(r)
	}
	return c.Flush()
}

func (n *nft) rules(p *pool, hostports, pre, out, post, in *nftables.Chain) []*nftables.Rule {
	rule := func(ch *nftables.Chain, why string, exprs ...[]expr.Any) *nftables.Rule {
		r := &nftables.Rule{Table: n.table, Chain: ch, UserData: comment(why)}
		for _, e := range exprs {
			r.Exprs = append(r.Exprs, e...)
		}
		return r
	}
	localDst := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	jump := []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: hostports.Name}}
	dnat := []expr.Any{&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9}}
	cidr := p.prefix
	return []*nftables.Rule{
		rule(pre, "shim: host ports", localDst, jump),
		rule(out, "shim: host ports from the host", localDst, jump),
		rule(hostports, "shim: host ports on one address", []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
			&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: n.addr.Name, SetID: n.addr.ID, DestRegister: 1, IsDestRegSet: true},
		}, dnat),
		rule(hostports, "shim: host ports on every address", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: n.any.Name, SetID: n.any.ID, DestRegister: 1, IsDestRegSet: true},
		}, dnat),
		rule(post, "shim: localhost to a host port", ctDNAT(true), ipMatch(12, netip.MustParsePrefix("127.0.0.0/8"), true),
			ifname(unix.NFT_META_OIFNAME, n.bridge), masq()),
		rule(post, "shim: hairpin", ctDNAT(true), ipMatch(12, cidr, true), ipMatch(16, cidr, true), masq()),
		rule(post, "shim: egress", ipMatch(12, cidr, true), ipMatch(16, cidr, false),
			ipMatch(16, netip.MustParsePrefix("224.0.0.0/4"), false), masq()),
		rule(in, "shim: pods may not reach host loopback", ifname(unix.NFT_META_IIFNAME, n.bridge),
			ipMatch(16, netip.MustParsePrefix("127.0.0.0/8"), true), ctDNAT(false),
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}),
	}
}

func masq() []expr.Any { return []expr.Any{&expr.Masq{}} }

// ctDNAT matches connections that were (or were not) destination-NATed.
func ctDNAT(is bool) []expr.Any {
	op := expr.CmpOpNeq
	if !is {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDNAT), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: op, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// ipMatch matches the IPv4 address at offset (12 saddr, 16 daddr) in p.
func ipMatch(offset uint32, p netip.Prefix, in bool) []expr.Any {
	mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
	a := p.Masked().Addr().As4()
	op := expr.CmpOpEq
	if !in {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: a[:]},
	}
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// addPorts publishes the pod's host ports, one batch.
func (n *nft) addPorts(podID string, ip netip.Addr, ports []netdrv.PortMapping) error {
	if len(ports) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	for _, pm := range ports {
		set, el := n.element(podID, ip, pm, true)
		if err := c.SetAddElements(set, []nftables.SetElement{el}); err != nil {
			return err
		}
	}
	return c.Flush()
}

// delPorts removes the pod's host ports, one batch. A batch fails as a
// whole when one element is missing (a half-done Setup, a flushed table),
// so on ENOENT each element is retried alone and missing ones are skipped.
func (n *nft) delPorts(podID string, ports []netdrv.PortMapping) error {
	if len(ports) == 0 {
		return nil
	}
	del := func(ports []netdrv.PortMapping) error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		for _, pm := range ports {
			set, el := n.element(podID, netip.Addr{}, pm, false)
			if err := c.SetDeleteElements(set, []nftables.SetElement{el}); err != nil {
				return err
			}
		}
		return c.Flush()
	}
	err := del(ports)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return err
	}
	for _, pm := range ports {
		if err := del([]netdrv.PortMapping{pm}); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// portElem is one published host port as read back from the kernel.
type portElem struct {
	pm    netdrv.PortMapping
	ip    netip.Addr
	owner string // pod id from the element comment
}

// listPorts reads both maps (start-up reconciliation and tests).
func (n *nft) listPorts() ([]portElem, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	var out []portElem
	for _, set := range []*nftables.Set{n.any, n.addr} {
		els, err := c.GetSetElements(set)
		if err != nil {
			return nil, err
		}
		for _, el := range els {
			k := el.Key
			var pe portElem
			if set == n.addr {
				if len(k) < 4 {
					continue
				}
				pe.pm.HostIP = netip.AddrFrom4([4]byte(k[:4])).String()
				k = k[4:]
			}
			if len(k) < 6 || len(el.Val) < 6 {
				continue
			}
			switch k[0] {
			case unix.IPPROTO_TCP:
				pe.pm.Protocol = "tcp"
			case unix.IPPROTO_UDP:
				pe.pm.Protocol = "udp"
			case unix.IPPROTO_SCTP:
				pe.pm.Protocol = "sctp"
			}
			pe.pm.HostPort = int32(binary.BigEndian.Uint16(k[4:6]))
			pe.ip = netip.AddrFrom4([4]byte(el.Val[:4]))
			pe.pm.ContainerPort = int32(binary.BigEndian.Uint16(el.Val[4:6]))
			pe.owner = strings.TrimPrefix(el.Comment, "pod=")
			out = append(out, pe)
		}
	}
	return out, nil
}

// deleteTable removes the driver's table (tests and uninstall).
func (n *nft) deleteTable() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(n.table)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table %s: %w", n.table.Name, err)
	}
	return nil
}
