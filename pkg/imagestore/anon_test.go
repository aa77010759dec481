package imagestore

import (
	"net/http"
	"strings"
	"testing"
)

// pings counts the pings (GET /v2/) the registry served.
func (tr *testRegistry) pings() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, r := range tr.requests {
		if r == "GET /v2/" {
			n++
		}
	}
	return n
}

// TestAnonymousTransportReused: anonymous pulls of one repository reuse
// the first one's transport (one ping) for anonTTL; another repository
// has its own; a refused request and the end of the TTL make the next pull
// ping again.
func TestAnonymousTransportReused(t *testing.T) {
	reg := newTestRegistry(t)
	s := newStore(t, "overlay", "")
	reg.push(t, "anon/a:1", simpleImage(t, "a1"))
	reg.push(t, "anon/a:2", simpleImage(t, "a2"))
	reg.push(t, "anon/b:1", simpleImage(t, "b1"))
	reg.reset() // the pushes' requests
	pull := func(ref string) error {
		t.Helper()
		_, err := s.Pull(ctx, reg.host+"/"+ref, nil, nil)
		return err
	}
	wantPings := func(what string, want int) {
		t.Helper()
		if got := reg.pings(); got != want {
			t.Fatalf("%s: %d pings, want %d (requests %q)", what, got, want, reg.requests)
		}
	}
	for _, ref := range []string{"anon/a:1", "anon/a:2", "anon/a:1"} {
		if err := pull(ref); err != nil {
			t.Fatal(err)
		}
	}
	wantPings("three pulls of one repository", 1)
	if err := pull("anon/b:1"); err != nil {
		t.Fatal(err)
	}
	wantPings("a pull of another repository", 2)

	// A pull whose manifest request answer(w) answers fails, with the
	// kept transport (no ping); the next pull pings again, the one after
	// it does not.
	failing := func(what string, answer func(w http.ResponseWriter)) {
		t.Helper()
		pings := reg.pings()
		reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.Contains(r.URL.Path, "/manifests/") {
				return false
			}
			answer(w)
			return true
		})
		if err := pull("anon/a:1"); err == nil {
			t.Fatalf("pull %s succeeded", what)
		}
		reg.setHook(nil)
		wantPings("a pull "+what, pings)
		for _, after := range []string{"the pull after it", "the pull after that"} {
			if err := pull("anon/a:1"); err != nil {
				t.Fatal(err)
			}
			wantPings(after+" ("+what+")", pings+1)
		}
	}
	failing("refused with 401", func(w http.ResponseWriter) { w.WriteHeader(http.StatusUnauthorized) })
	failing("without an answer (the connection closed)", func(w http.ResponseWriter) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	})

	s.reg.mu.Lock()
	s.reg.anonTTL = 0
	s.reg.mu.Unlock()
	for _, ref := range []string{"anon/a:1", "anon/a:2"} {
		if err := pull(ref); err != nil {
			t.Fatal(err)
		}
	}
	wantPings("two pulls with a TTL of 0", 6)
}
