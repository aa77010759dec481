// Package memtrim gives a long-running daemon's memory back to the kernel
// once a burst of work is over. The Go runtime keeps the heap a burst grew
// until collections and its background scavenger shrink it, and an idle
// daemon allocates too little to collect; the binary's code the burst ran
// stays mapped. After a burst (at least Burst bytes allocated, or the
// resident set grown by Growth bytes, since the last trim) followed by a
// quiet interval (at most Quiet bytes allocated in it), Run calls the trim
// function once: a collection that returns the free heap
// (debug.FreeOSMemory) and, in shim, the binary's code pages dropped again
// (cmon.DropText; they are mapped back as they run). A steady trickle of
// small requests (kubelet's polling) never starts one.
package memtrim

import (
	"context"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Policy decides when to trim from the cumulative bytes allocated.
type Policy struct {
	Burst, Growth, Quiet uint64
	started              bool
	last, base           uint64 // allocations at the last tick, and at the last trim
	baseRSS              uint64 // the resident set after the last trim
}

// Tick takes the bytes allocated so far and the resident set, and reports
// whether to trim now.
func (p *Policy) Tick(allocs, rss uint64) bool {
	if !p.started {
		p.started = true
		p.Trimmed(allocs, rss)
		return false
	}
	delta := allocs - p.last
	p.last = allocs
	burst := allocs-p.base >= p.Burst || (p.Growth > 0 && rss >= p.baseRSS+p.Growth)
	return burst && delta <= p.Quiet
}

// Trimmed records a trim, with the bytes allocated and the resident set
// after it.
func (p *Policy) Trimmed(allocs, rss uint64) { p.last, p.base, p.baseRSS = allocs, allocs, rss }

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

// Resident is this process's resident set in bytes (0 if unknown).
func Resident() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n * uint64(os.Getpagesize())
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
		if p.Tick(Allocated(), Resident()) {
			trim()
			p.Trimmed(Allocated(), Resident())
		}
	}
}
