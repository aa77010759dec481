package memtrim

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestPolicy: one trim after a burst once it is quiet; none during the
// burst, none for a steady trickle, none again until the next burst.
func TestPolicy(t *testing.T) {
	p := &Policy{Burst: 1000, Growth: 100, Quiet: 10}
	var allocs, rss uint64 = 0, 50
	step := func(n uint64) bool {
		allocs += n
		return p.Tick(allocs, rss)
	}
	if step(0) {
		t.Fatal("trim at the first tick")
	}
	for i := 0; i < 100; i++ {
		if step(5) {
			t.Fatalf("trim for a trickle at tick %d", i)
		}
	}
	// 500 of the 1000 are done; the burst brings the rest.
	for i := 0; i < 3; i++ {
		if step(400) {
			t.Fatalf("trim during the burst at tick %d", i)
		}
	}
	if !step(0) {
		t.Fatal("no trim once quiet after the burst")
	}
	p.Trimmed(allocs, rss)
	for i := 0; i < 10; i++ {
		if step(1) {
			t.Fatalf("a second trim without a burst at tick %d", i)
		}
	}
	step(2000)
	if !step(10) {
		t.Fatal("no trim after the second burst")
	}
	p.Trimmed(allocs, rss)
	// Resident memory that grew (code mapped back, a live heap) with
	// few allocations is a burst too.
	rss += 99
	if step(1) {
		t.Fatal("trim before the resident set grew by Growth")
	}
	rss++
	if !step(1) {
		t.Fatal("no trim once the resident set grew by Growth")
	}
}

// TestRun: Run trims after real allocations, then stops with its context.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var trims atomic.Int32
	done := make(chan struct{})
	go func() {
		Run(ctx, 10*time.Millisecond, &Policy{Burst: 4 << 20, Growth: 1 << 30, Quiet: 1 << 20}, func() { trims.Add(1) })
		close(done)
	}()
	time.Sleep(30 * time.Millisecond)
	var keep [][]byte
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 128<<10))
	}
	_ = keep
	for i := 0; i < 500 && trims.Load() == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if trims.Load() == 0 {
		t.Fatal("no trim after 8 MiB allocated")
	}
	if Resident() == 0 {
		t.Error("no resident set read from /proc/self/statm")
	}
}
