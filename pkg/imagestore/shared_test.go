package imagestore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFlightShares(t *testing.T) {
	var f flight[int]
	var runs atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := f.do(context.Background(), "k", func(ctx context.Context) (int, error) {
				runs.Add(1)
				<-release
				return 42, nil
			})
			if v != 42 || err != nil {
				t.Errorf("got %d %v", v, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if runs.Load() != 1 {
		t.Fatalf("fn ran %d times, want 1", runs.Load())
	}
}

func TestFlightCancelOnlyWhenAllGone(t *testing.T) {
	var f flight[int]
	cancelled := make(chan struct{})
	ctx1, cancel1 := context.WithCancel(context.Background())
	started := make(chan struct{})
	go f.do(ctx1, "k", func(ctx context.Context) (int, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return 0, ctx.Err()
	})
	<-started
	ctx2, cancel2 := context.WithCancel(context.Background())
	res := make(chan error)
	go func() { _, err := f.do(ctx2, "k", nil); res <- err }()
	for joined := false; !joined; time.Sleep(time.Millisecond) { // the second waiter is in
		f.mu.Lock()
		joined = f.calls["k"].waiters == 2
		f.mu.Unlock()
	}
	cancel1()
	select {
	case <-cancelled:
		t.Fatal("call cancelled while a waiter remains")
	case <-time.After(50 * time.Millisecond):
	}
	cancel2()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("second waiter: %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("call not cancelled after every waiter left")
	}
}
