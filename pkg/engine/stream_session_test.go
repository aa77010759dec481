package engine

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// halfPipe is a client stream: reads come from r, writes go to w; Close
// ends the writes (a half-close, as an SPDY stream's Close does).
type halfPipe struct {
	r *io.PipeReader
	w *io.PipeWriter
}

func (h halfPipe) Read(p []byte) (int, error)  { return h.r.Read(p) }
func (h halfPipe) Write(p []byte) (int, error) { return h.w.Write(p) }
func (h halfPipe) Close() error                { return h.w.Close() }

// server accepts one connection and runs fn on it.
func server(t *testing.T, fn func(c net.Conn)) net.Conn {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err == nil {
			fn(c)
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestForward(t *testing.T) {
	ctx := context.Background()
	t.Run("client half-closes, the pod answers", func(t *testing.T) {
		conn := server(t, func(c net.Conn) {
			b, _ := io.ReadAll(c) // until the half-close
			c.Write([]byte("got " + string(b)))
			c.Close()
		})
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- forward(ctx, conn, halfPipe{inR, outW}) }()
		go func() { inW.Write([]byte("request")); inW.Close() }()
		got := make(chan string, 1)
		go func() { b, _ := io.ReadAll(io.LimitReader(outR, 11)); got <- string(b) }()
		if s := <-got; s != "got request" {
			t.Errorf("answer %q", s)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("forward: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("forward did not end")
		}
	})
	grace := portForwardGrace
	defer func() { portForwardGrace = grace }()
	t.Run("the pod closes first", func(t *testing.T) {
		portForwardGrace = time.Hour // forward must not wait for the client
		conn := server(t, func(c net.Conn) { c.Write([]byte("bye")); c.Close() })
		inR, _ := io.Pipe() // the client never sends nor closes
		outR, outW := io.Pipe()
		go io.Copy(io.Discard, outR)
		done := make(chan error, 1)
		go func() { done <- forward(ctx, conn, halfPipe{inR, outW}) }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("forward: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("forward waits for the client after the pod closed")
		}
	})
	t.Run("the client goes away, the pod is silent", func(t *testing.T) {
		portForwardGrace = 100 * time.Millisecond
		conn := server(t, func(c net.Conn) { time.Sleep(time.Hour) })
		inR, inW := io.Pipe()
		_, outW := io.Pipe()
		inW.Close()
		done := make(chan error, 1)
		go func() { done <- forward(ctx, conn, halfPipe{inR, outW}) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("forward did not end after the grace period")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		conn := server(t, func(c net.Conn) { time.Sleep(time.Hour) })
		inR, _ := io.Pipe()
		_, outW := io.Pipe()
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- forward(cctx, conn, halfPipe{inR, outW}) }()
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("forward: %v", err)
		}
	})
}

func TestHasEnv(t *testing.T) {
	env := []string{"PATH=/bin", "TERMINAL=x", "TERM"}
	if hasEnv(env, "TERM") || !hasEnv(env, "PATH") || !hasEnv(append(env, "TERM=xterm"), "TERM") {
		t.Error(strings.Join(env, " "))
	}
}
