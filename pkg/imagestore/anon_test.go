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

	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		return false
	})
	if err := pull("anon/a:1"); err == nil {
		t.Fatal("pull refused with 401 succeeded")
	}
	reg.setHook(nil)
	wantPings("a refused pull (with the kept transport)", 2)
	if err := pull("anon/a:1"); err != nil {
		t.Fatal(err)
	}
	wantPings("the pull after a refusal", 3)
	if err := pull("anon/a:1"); err != nil {
		t.Fatal(err)
	}
	wantPings("the pull after that", 3)

	// No answer at all (the connection closed): forgotten too.
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return false
		}
		conn.Close()
		return true
	})
	if err := pull("anon/a:1"); err == nil {
		t.Fatal("pull without an answer succeeded")
	}
	reg.setHook(nil)
	wantPings("a pull without an answer (with the kept transport)", 3)
	if err := pull("anon/a:1"); err != nil {
		t.Fatal(err)
	}
	wantPings("the pull after no answer", 4)

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
