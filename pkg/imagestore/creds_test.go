package imagestore

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// writeHosts writes <dir>/<host>/hosts.toml.
func writeHosts(t *testing.T, dir, host, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, host), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// requireAuth makes reg answer 401 (challenge) unless a request carries
// one of the accepted Authorization values.
func requireAuth(reg *testRegistry, accepted ...string) {
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		got := r.Header.Get("Authorization")
		for _, a := range accepted {
			if got == a {
				return false
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"auth required"}]}`))
		return true
	})
}

// TestCredentialsOnlyToTheImageRegistry: with no server_address, the CRI
// credentials go to the registry the image reference names and to no
// mirror of it, http or https. Real registries on loopback record every
// Authorization header they get.
func TestCredentialsOnlyToTheImageRegistry(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	for _, tc := range []struct {
		name string
		auth *Auth
	}{
		{"username and password", &Auth{Username: "alice", Password: "s3cret"}},
		{"auth", &Auth{Auth: base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}},
		{"registry token", &Auth{RegistryToken: "tok-123"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := newTLSTestRegistry(t) // the image's registry
			httpMirror := newTestRegistry(t)
			tlsMirror := newTLSTestRegistry(t)
			upstream.push(t, "lib/img:1", simpleImage(t, "private"))
			requireAuth(upstream, basic, "Bearer tok-123")
			dir := t.TempDir()
			writeHosts(t, dir, upstream.host, fmt.Sprintf(`server = "https://%s"
ca = %q
[host."http://%s"]
  capabilities = ["pull", "resolve"]
[host."https://%s"]
  capabilities = ["pull", "resolve"]
  ca = %q
`, upstream.host, upstream.ca, httpMirror.host, tlsMirror.host, tlsMirror.ca))
			s := newStore(t, "overlay", dir)
			if _, err := s.Pull(ctx, upstream.host+"/lib/img:1", tc.auth, nil); err != nil {
				t.Fatal(err)
			}
			if httpMirror.count("/manifests/") == 0 || tlsMirror.count("/manifests/") == 0 {
				t.Fatal("the mirrors were not asked first")
			}
			if a := httpMirror.authorizations(); len(a) > 0 {
				t.Errorf("the http mirror got credentials in clear text: %v", a)
			}
			if a := tlsMirror.authorizations(); len(a) > 0 {
				t.Errorf("the https mirror got the upstream's credentials: %v", a)
			}
			if len(upstream.authorizations()) == 0 {
				t.Error("the image's registry got no credentials")
			}
		})
	}
}

// TestNoCredentialsOverPlainHTTP: credentials never travel over plain
// HTTP unless the registry's hosts.toml entry says plain_http_credentials:
// not to an http server, not to a loopback registry the client reaches
// over http by fallback, not to a token server named by an http realm.
func TestNoCredentialsOverPlainHTTP(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	auth := &Auth{Username: "alice", Password: "s3cret"}

	t.Run("http server", func(t *testing.T) {
		reg := newTestRegistry(t)
		reg.push(t, "lib/img:1", simpleImage(t, "http"))
		requireAuth(reg, basic)
		dir := t.TempDir()
		writeHosts(t, dir, reg.host, fmt.Sprintf("server = \"http://%s\"\n", reg.host))
		s := newStore(t, "overlay", dir)
		_, err := s.Pull(ctx, reg.host+"/lib/img:1", auth, nil)
		if !errdefs.IsUnauthenticated(err) || !strings.Contains(err.Error(), "plain_http_credentials") {
			t.Errorf("want unauthenticated naming plain_http_credentials, got %v", err)
		}
		if a := reg.authorizations(); len(a) > 0 {
			t.Fatalf("credentials sent over plain HTTP: %v", a)
		}
		// The entry allows it: now they go.
		writeHosts(t, dir, reg.host, fmt.Sprintf("server = \"http://%s\"\nplain_http_credentials = true\n", reg.host))
		if _, err := s.Pull(ctx, reg.host+"/lib/img:1", auth, nil); err != nil {
			t.Fatalf("with plain_http_credentials: %v", err)
		}
		if len(reg.authorizations()) == 0 {
			t.Error("no credentials sent with plain_http_credentials")
		}
	})

	t.Run("loopback fallback", func(t *testing.T) {
		// No hosts.toml: the endpoint is https://127.0.0.1:port, which the
		// registry client falls back to http for (a loopback address).
		reg := newTestRegistry(t)
		reg.push(t, "lib/img:1", simpleImage(t, "fallback"))
		requireAuth(reg, basic)
		s := newStore(t, "overlay", "")
		_, err := s.Pull(ctx, reg.host+"/lib/img:1", auth, nil)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "plain_http_credentials") {
			t.Errorf("want failed precondition naming plain_http_credentials, got %v", err)
		}
		if a := reg.authorizations(); len(a) > 0 {
			t.Fatalf("credentials sent over plain HTTP: %v", a)
		}
	})

	t.Run("http token realm", func(t *testing.T) {
		reg := newTLSTestRegistry(t)
		tokens := newTestRegistry(t) // a token server on http
		reg.push(t, "lib/img:1", simpleImage(t, "realm"))
		reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Header.Get("Authorization") == "Bearer tok-123" {
				return false
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, tokens.host))
			w.WriteHeader(http.StatusUnauthorized)
			return true
		})
		tokens.setHook(func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"token": "tok-123"}`))
			return true
		})
		dir := t.TempDir()
		writeHosts(t, dir, reg.host, fmt.Sprintf("server = \"https://%s\"\nca = %q\n", reg.host, reg.ca))
		s := newStore(t, "overlay", dir)
		// go-containerregistry refuses an http realm for an https
		// registry itself; the guard below it would too.
		if _, err := s.Pull(ctx, reg.host+"/lib/img:1", auth, nil); err == nil {
			t.Error("pulled through an http token server")
		}
		if a := tokens.authorizations(); len(a) > 0 {
			t.Fatalf("credentials sent to an http token server: %v", a)
		}
	})
}
