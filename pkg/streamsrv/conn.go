package streamsrv

import (
	"errors"
	"net"
	"os"
	"sync"
)

// A streaming session's HTTP connection is hijacked by the SPDY or
// WebSocket layer, after which nothing tells the session that the client
// went away, and a session whose process is silent would wait forever.
// The listener wraps each connection to notice that: the upgraded
// protocol reads the connection all along, and a read that fails (other
// than a deadline) or a close means the client is gone.

type connKey struct{}

type trackingListener struct{ net.Listener }

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, done: make(chan struct{})}, nil
}

type trackedConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *trackedConn) gone() { c.once.Do(func() { close(c.done) }) }

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		c.gone()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.gone()
	return c.Conn.Close()
}

// afterClose calls f once c is gone; the returned stop prevents it.
func afterClose(c *trackedConn, f func()) func() bool {
	stop := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-c.done:
			f()
		case <-stop:
		}
	}()
	return func() bool {
		once.Do(func() { close(stop) })
		return true
	}
}
