package imagestore

import (
	"context"
	"sync"
)

// flight runs one call per key at a time and shares its result with every
// caller that asks for the same key meanwhile. The call runs on its own
// context, detached from any one caller: it is cancelled only when every
// waiting caller has gone, so one impatient client cannot fail a download
// another client is waiting for.
type flight[T any] struct {
	mu    sync.Mutex
	calls map[string]*call[T]
}

type call[T any] struct {
	done    chan struct{}
	val     T
	err     error
	waiters int
	cancel  context.CancelFunc
}

// do runs fn for key, or joins the call already running for key.
func (f *flight[T]) do(ctx context.Context, key string, fn func(ctx context.Context) (T, error)) (T, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]*call[T]{}
	}
	c, ok := f.calls[key]
	if !ok {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call[T]{done: make(chan struct{}), cancel: cancel}
		f.calls[key] = c
		go func() {
			c.val, c.err = fn(cctx)
			cancel()
			f.mu.Lock()
			if f.calls[key] == c {
				delete(f.calls, key)
			}
			f.mu.Unlock()
			close(c.done)
		}()
	}
	c.waiters++
	f.mu.Unlock()

	select {
	case <-c.done:
		f.mu.Lock()
		c.waiters--
		f.mu.Unlock()
		return c.val, c.err
	case <-ctx.Done():
		f.mu.Lock()
		c.waiters--
		last := c.waiters == 0
		if last {
			c.cancel()
			// A caller arriving now must not join a dying call.
			if f.calls[key] == c {
				delete(f.calls, key)
			}
		}
		f.mu.Unlock()
		if last {
			// The call is cancelled: let it clean up before returning,
			// so a failed caller leaves nothing running behind it.
			<-c.done
		}
		var zero T
		return zero, ctx.Err()
	}
}
