// Package memtrim gives a long-running daemon's memory back to the kernel
// once a burst of work is over. The Go runtime keeps the heap a burst grew
// until collections and its background scavenger shrink it, and an idle
// daemon allocates too little to collect; the binary's code the burst ran
// stays mapped. After a burst (at least Burst bytes allocated since the
// last trim) followed by a quiet interval (at most Quiet bytes allocated
// in it), Run calls the trim function once: a collection that returns the
// free heap (debug.FreeOSMemory) and, in shim, the binary's code pages
// dropped again (cmon.DropText; they are mapped back as they run). A
// steady trickle of small requests (kubelet's polling) never starts one.
package memtrim

import (
	"context"
	"runtime/metrics"
	"time"
)

// Policy decides when to trim from the cumulative bytes allocated.
type Policy struct {
	Burst, Quiet uint64
	started      bool
	last, base   uint64 // allocations at the last tick, and at the last trim
}

// Tick takes the bytes allocated so far and reports whether to trim now.
func (p *Policy) Tick(allocs uint64) bool {
	if !p.started {
		p.started, p.last, p.base = true, allocs, allocs
		return false
	}
	delta := allocs - p.last
	p.last = allocs
	return allocs-p.base >= p.Burst && delta <= p.Quiet
}

// Trimmed records a trim, with the bytes allocated after it.
func (p *Policy) Trimmed(allocs uint64) { p.last, p.base = allocs, allocs }

const allocsMetric = "/gc/heap/allocs:bytes"

// Allocated is the bytes this process has allocated on the heap so far.
func Allocated() uint64 {
	s := []metrics.Sample{{Name: allocsMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// Run checks p every interval until ctx ends and calls trim when it says.
func Run(ctx context.Context, interval time.Duration, p *Policy, trim func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.Tick(Allocated()) {
			trim()
			p.Trimmed(Allocated())
		}
	}
}
