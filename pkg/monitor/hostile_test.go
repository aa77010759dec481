package monitor

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// raw sends b on a new connection (closing the write side when half) and
// returns the answer line, or "" when the monitor closed without one.
func (p *testPod) raw(t *testing.T, b []byte, half bool) string {
	t.Helper()
	conn, err := dialUnix(filepath.Join(p.dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		conn.Write(b)
		if half {
			conn.CloseWrite()
		}
	}()
	out, _ := io.ReadAll(io.LimitReader(conn, 1<<20))
	return string(out)
}

func errorClass(t *testing.T, answer string) string {
	t.Helper()
	var r Response
	if err := json.Unmarshal([]byte(answer), &r); err != nil {
		t.Fatalf("answer %.200q: %v", answer, err)
	}
	if r.Error == nil {
		return "ok"
	}
	return r.Error.Class
}

// TestMonitorHostileRequests sends malformed and abusive requests on the
// socket, one per row, and checks the answer's error class and that the
// monitor still serves.
func TestMonitorHostileRequests(t *testing.T) {
	p := spawnMonitor(t)
	bundle := p.bundle(t, "sleep", "1000")
	p.run(t, "h1", bundle, "")
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	for _, tc := range []struct {
		name, req string
		half      bool
		class     string
	}{
		{"not json", "hello\n", false, "invalid_argument"},
		{"not an object", `["op","state"]` + "\n", false, "invalid_argument"},
		{"no op", `{"id":"h1"}` + "\n", false, "invalid_argument"},
		{"unknown op", `{"op":"format-disk"}` + "\n", false, "invalid_argument"},
		{"trailing garbage", `{"op":"state"} x` + "\n", false, "invalid_argument"},
		{"unterminated string", `{"op":"sta` + "\n", false, "invalid_argument"},
		{"raw newline in a string", "{\"op\":\"state\",\"id\":\"a\nb\"}\n", false, "invalid_argument"},
		{"NUL in the id", `{"op":"kill","id":"h1\u0000x","signal":9}` + "\n", false, "invalid_argument"},
		{"fractional signal", `{"op":"kill","id":"h1","signal":9.5}` + "\n", false, "invalid_argument"},
		{"huge signal", `{"op":"kill","id":"h1","signal":99999999999999999999}` + "\n", false, "invalid_argument"},
		{"signal out of range", `{"op":"kill","id":"h1","signal":1000}` + "\n", false, "invalid_argument"},
		{"deeply nested process", `{"op":"exec_sync","id":"h1","process":` + deep + "}\n", false, "invalid_argument"},
		{"process of the wrong type", `{"op":"exec_sync","id":"h1","process":"sh"}` + "\n", false, "invalid_argument"},
		{"unknown container", `{"op":"start","id":"../../etc"}` + "\n", false, "not_found"},
		{"a case-folded key is not the key", `{"op":"kill","ID":"h1","signal":9}` + "\n", false, "not_found"},
		{"bad escape", `{"op":"st\q"}` + "\n", false, "invalid_argument"},
		{"request at EOF without a newline", `{"op":"state"}`, true, "ok"},
		{"escaped op", `{"op":"\u0073tate"}` + "\n", false, "ok"},
		{"duplicate keys: the last wins", `{"op":"kill","op":"state"}` + "\n", false, "ok"},
		{"nulls are absent values", `{"op":"state","id":null,"process":null,"all":null}` + "\n", false, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorClass(t, p.raw(t, []byte(tc.req), tc.half)); got != tc.class {
				t.Errorf("class %s, want %s", got, tc.class)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		big := append([]byte(`{"op":"state","x":"`), bytes.Repeat([]byte("a"), maxRequest)...)
		if got := errorClass(t, p.raw(t, big, false)); got != "invalid_argument" {
			t.Errorf("class %s", got)
		}
	})
	t.Run("empty connections", func(t *testing.T) {
		if got := p.raw(t, nil, true); got != "" {
			t.Errorf("answer to nothing: %q", got)
		}
	})
	t.Run("idle connections do not block others", func(t *testing.T) {
		var idle []net.Conn
		for i := 0; i < 50; i++ {
			c, err := dialUnix(filepath.Join(p.dir, SocketName))
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte(`{"op":`))
			idle = append(idle, c)
		}
		defer func() {
			for _, c := range idle {
				c.Close()
			}
		}()
		if _, err := p.c.Call(ctxT(t), &Request{Op: OpState}); err != nil {
			t.Fatal(err)
		}
	})
	// The container is untouched and the monitor serves.
	st, err := p.c.Call(ctxT(t), &Request{Op: OpState})
	if err != nil || len(st.Containers) != 1 || st.Containers[0].Exited != nil {
		t.Fatalf("state after hostile requests: %+v %v", st, err)
	}
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpKill, ID: "h1", Signal: 0}); err != nil {
		t.Errorf("signal 0 to a running container: %v", err)
	}
	if _, err := p.c.Call(ctxT(t), &Request{Op: OpDelete, ID: "h1", Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadExitRecord(bundle); err != nil {
		t.Error(err)
	}
}
