package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// peerSpec is one comparison endpoint as the command line gives it.
type peerSpec struct {
	name, endpoint, procs, match string
	daemonPID                    int
	set                          map[string]bool // the flags given for it
}

// peerList collects the comparison endpoints (B, C, ...). Each -compare
// starts one; -endpoint-b, -name-b, -runtime-procs-b, -proc-match-b and
// -daemon-pid-b set the one started last (given before the first -compare,
// they belong to the first). A flag given twice for one peer is an error, so
// that a flag meant for the next peer is never silently taken by this one.
//
//	-compare unix:///a.sock -name-b c1.6 -compare unix:///b.sock -name-b c2.4
type peerList struct {
	peers []*peerSpec
}

func (l *peerList) current() *peerSpec {
	if len(l.peers) == 0 {
		l.peers = append(l.peers, &peerSpec{set: map[string]bool{}})
	}
	return l.peers[len(l.peers)-1]
}

// setField sets one -b flag of the current peer.
func (l *peerList) setField(key, v string) error {
	p := l.current()
	if p.set[key] {
		if key == "endpoint" && p.endpoint == v {
			return nil
		}
		if key == "endpoint" {
			return fmt.Errorf("peer %d: -compare and -endpoint-b disagree (%q, %q)", len(l.peers), p.endpoint, v)
		}
		return fmt.Errorf("peer %d (%s): given twice: give each peer's flags after its -compare", len(l.peers), p.endpoint)
	}
	switch key {
	case "endpoint":
		p.endpoint = v
	case "name":
		p.name = v
	case "procs":
		p.procs = v
	case "match":
		p.match = v
	case "daemon-pid":
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		p.daemonPID = n
	}
	p.set[key] = true
	return nil
}

// compare starts a new peer at endpoint v, unless the current one has no
// endpoint yet (its flags came first).
func (l *peerList) compare(v string) error {
	if len(l.peers) > 0 && !l.current().set["endpoint"] {
		return l.setField("endpoint", v)
	}
	l.peers = append(l.peers, &peerSpec{set: map[string]bool{}})
	return l.setField("endpoint", v)
}

// peerFlag is one flag.Value of a peerList.
type peerFlag struct {
	list *peerList
	key  string // "compare" or a setField key
}

func (f peerFlag) String() string { return "" }

func (f peerFlag) Set(v string) error {
	if f.key == "compare" {
		return f.list.compare(v)
	}
	return f.list.setField(f.key, v)
}

func addPeerFlags(fs *flag.FlagSet, l *peerList) {
	fs.Var(peerFlag{l, "compare"}, "compare", "a comparison endpoint (repeatable: one per peer): every round runs on -endpoint, then on each peer, and ratios of -endpoint to each peer and to the better peer are printed; the -b flags after it describe it")
	fs.Var(peerFlag{l, "endpoint"}, "endpoint-b", "CRI endpoint of the current peer (as -compare, without starting another)")
	fs.Var(peerFlag{l, "name"}, "name-b", "label of the current peer (default: the runtime name Version reports)")
	fs.Var(peerFlag{l, "procs"}, "runtime-procs-b", "memory: comma-separated executable names (or full paths) of the current peer's own processes")
	fs.Var(peerFlag{l, "match"}, "proc-match-b", "memory: a string the command line or executable of the current peer's processes contains (their children count too)")
	fs.Var(peerFlag{l, "daemon-pid"}, "daemon-pid-b", "pid of the current peer's daemon: measured by idle and rss-after, excluded from memory")
}

// targets turns the specs into targets labelled B, C, ...
func (l *peerList) targets() ([]*target, error) {
	var out []*target
	for i, p := range l.peers {
		if p.endpoint == "" {
			return nil, fmt.Errorf("peer %d: flags without -compare", i+1)
		}
		if i >= 25 {
			return nil, fmt.Errorf("at most 25 peers")
		}
		out = append(out, newTarget(string(rune('B'+i)), p.name, p.endpoint, p.procs, p.match, p.daemonPID))
	}
	return out, nil
}

func newTarget(label, name, endpoint, procs, match string, daemonPID int) *target {
	t := &target{Label: label, Name: name, Endpoint: endpoint, DaemonPID: daemonPID}
	for n := range strings.SplitSeq(procs, ",") {
		if n = strings.TrimSpace(n); n != "" {
			t.Procs.Names = append(t.Procs.Names, n)
		}
	}
	t.Procs.Match = match
	if t.DaemonPID > 0 {
		t.Procs.Exclude = map[int]bool{t.DaemonPID: true}
	}
	return t
}

// uniqueNames appends "-<label>" to every name that more than one target
// has, so that records and tables tell them apart.
func uniqueNames(targets []*target) {
	n := map[string]int{}
	for _, t := range targets {
		n[t.Name]++
	}
	for _, t := range targets {
		if n[t.Name] > 1 {
			t.Name += "-" + t.Label
		}
	}
}

// higherIsBetter: throughput; every other metric is a time or a size.
func higherIsBetter(metric string) bool { return unitOf(metric) == "MiB/s" }

// betterOf returns the index of the best of vals (the lowest, or the
// highest when higher is better); the first on a tie.
func betterOf(vals []float64, higher bool) int {
	best := 0
	for i, v := range vals {
		if (higher && v > vals[best]) || (!higher && v < vals[best]) {
			best = i
		}
	}
	return best
}

// betterRatio is A against the better of the peers, each statistic on its
// own: the median ratio against the peer with the best median, the p90
// ratio against the peer with the best p90. ok is false without peers or
// when the chosen value is 0.
type betterRatio struct {
	MedianPeer, P90Peer   int // indices into the peers
	MedianRatio, P90Ratio float64
	MedianOK, P90OK       bool
}

func computeBetter(a Summary, peers []Summary, higher bool) betterRatio {
	var r betterRatio
	if len(peers) == 0 {
		return r
	}
	med := make([]float64, len(peers))
	p90 := make([]float64, len(peers))
	for i, s := range peers {
		med[i], p90[i] = s.Median, s.P90
	}
	r.MedianPeer, r.P90Peer = betterOf(med, higher), betterOf(p90, higher)
	r.MedianRatio, r.MedianOK = ratio(a.Median, med[r.MedianPeer])
	r.P90Ratio, r.P90OK = ratio(a.P90, p90[r.P90Peer])
	return r
}
