// Package streamtest has the small pieces the streaming tests share (the
// monitor's, the daemon's and the real-kubelet test's): an output buffer
// a stream writes while the test polls it, and a terminal size queue.
package streamtest

import (
	"bytes"
	"sync"

	"k8s.io/client-go/tools/remotecommand"
)

// SyncBuffer is a bytes.Buffer safe for one writer and pollers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// OneSize is a remotecommand.TerminalSizeQueue that sends one size, 90
// columns and 30 rows, then ends (nil): a queue that kept answering would
// make the client loop on it after the session.
type OneSize struct{ sent bool }

func (f *OneSize) Next() *remotecommand.TerminalSize {
	if f.sent {
		return nil
	}
	f.sent = true
	return &remotecommand.TerminalSize{Width: 90, Height: 30}
}
