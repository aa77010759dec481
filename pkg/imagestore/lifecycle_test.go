package imagestore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// TestCloseWaitsForBackgroundGC: a pull that moves a tag away from an
// image collects that image in the background; Close must wait for that
// collection (which uses the database and the snapshotter the caller
// closes next), and nothing starts after it.
func TestCloseWaitsForBackgroundGC(t *testing.T) {
	reg := newTestRegistry(t)
	var armed atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	s := newStore(t, "overlay", "", func(c *Config) {
		c.SnapshotRoots = func(ctx context.Context) ([]string, error) {
			if armed.Load() {
				entered <- struct{}{}
				<-release
			}
			return nil, nil
		}
	})
	reg.push(t, "gc/img:1", simpleImage(t, "old"))
	reg.push(t, "gc/img:2", simpleImage(t, "new"))
	first, err := s.Pull(ctx, reg.host+"/gc/img:1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Pull(ctx, reg.host+"/gc/img:2", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Every name of the first image moves to the second (as when a tag
	// and digest are re-pointed): the first is orphaned and collected in
	// the background.
	armed.Store(true)
	if _, err := s.commit(ctx, second, first.RepoTags[0], first.RepoDigests[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered: // the background collection is running
	case <-time.After(time.Minute):
		t.Fatal("no background collection started")
	}

	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Error("Close returned while a collection was running")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	<-closed
	// The collection finished before Close returned: the old image's
	// blobs (its manifest and config, which a store keeps with or without
	// its layers' blobs) are gone.
	for _, b := range first.Blobs() {
		if _, err := s.content.Size(b); !errdefs.IsNotFound(err) {
			t.Errorf("blob %s of the replaced image still there after Close: %v", b, err)
		}
	}
	if _, err := s.Pull(ctx, reg.host+"/gc/img:2", nil, nil); !errdefs.IsUnavailable(err) {
		t.Errorf("pull after Close: want unavailable, got %v", err)
	}
	if err := s.Remove(ctx, reg.host+"/gc/img:1"); !errdefs.IsUnavailable(err) {
		t.Errorf("remove after Close: want unavailable, got %v", err)
	}
}

// testCert is a self-signed certificate (its own CA) for 127.0.0.1.
type testCert struct {
	tls     tls.Certificate
	x509    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
}

func newTestCert(t *testing.T, cn string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	if c.tls, err = tls.X509KeyPair(c.certPEM, c.keyPEM); err != nil {
		t.Fatal(err)
	}
	c.x509, _ = x509.ParseCertificate(der)
	return c
}

// rotatingRegistry serves one registry over TLS with a server certificate
// and an accepted client certificate the test can change, and over plain
// HTTP on another port for pushing.
type rotatingRegistry struct {
	srv      *httptest.Server
	host     string
	push     *testRegistry
	server   atomic.Pointer[tls.Certificate]
	clientOK atomic.Pointer[x509.Certificate] // nil: no client certificate needed
}

func newRotatingRegistry(t *testing.T) *rotatingRegistry {
	rr := &rotatingRegistry{}
	h := registry.New(registry.Logger(nullLogger()))
	rr.srv = httptest.NewUnstartedServer(h)
	rr.srv.Listener = tls.NewListener(rr.srv.Listener, &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return rr.server.Load(), nil },
		ClientAuth:     tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			want := rr.clientOK.Load()
			if want == nil {
				return nil
			}
			if len(raw) == 0 || string(raw[0]) != string(want.Raw) {
				return errors.New("wrong client certificate")
			}
			return nil
		},
	})
	rr.srv.Start()
	t.Cleanup(rr.srv.Close)
	rr.host = rr.srv.Listener.Addr().String()
	pushSrv := httptest.NewServer(h)
	t.Cleanup(pushSrv.Close)
	rr.push = &testRegistry{srv: pushSrv, host: strings.TrimPrefix(pushSrv.URL, "http://")}
	return rr
}

// TestRegistryCertificatesReloaded: the CA and client certificate files a
// hosts.toml names are read again when they change; a long-running daemon
// picks up rotated certificates without a restart.
func TestRegistryCertificatesReloaded(t *testing.T) {
	rr := newRotatingRegistry(t)
	dir := t.TempDir()
	hostDir := filepath.Join(dir, rr.host)
	writeHosts(t, dir, rr.host, fmt.Sprintf("server = \"https://%s\"\nca = \"ca.pem\"\nclient = [\"client.pem\", \"client.key\"]\n", rr.host))
	install := func(server, client testCert) {
		t.Helper()
		for name, data := range map[string][]byte{"ca.pem": server.certPEM, "client.pem": client.certPEM, "client.key": client.keyPEM} {
			if err := os.WriteFile(filepath.Join(hostDir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		rr.server.Store(&server.tls)
		rr.clientOK.Store(client.x509)
		rr.srv.CloseClientConnections() // the next request handshakes again
	}
	s := newStore(t, "overlay", dir)

	for i, step := range []string{"first certificates", "server certificate rotated", "client certificate rotated"} {
		server, client := newTestCert(t, "server"), newTestCert(t, "client")
		switch i {
		case 0, 1:
			install(server, client)
		case 2:
			// Same server certificate, new client certificate.
			cur := rr.server.Load()
			os.WriteFile(filepath.Join(hostDir, "client.pem"), client.certPEM, 0o600)
			os.WriteFile(filepath.Join(hostDir, "client.key"), client.keyPEM, 0o600)
			rr.clientOK.Store(client.x509)
			rr.server.Store(cur)
			rr.srv.CloseClientConnections()
		}
		rr.push.push(t, fmt.Sprintf("rot/img:%d", i), simpleImage(t, fmt.Sprint("rot", i)))
		if _, err := s.Pull(ctx, fmt.Sprintf("%s/rot/img:%d", rr.host, i), nil, nil); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
}
