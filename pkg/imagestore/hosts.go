package imagestore

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// Endpoint is one registry host a pull may use, from containerd's
// hosts.toml format (<config dir>/<registry host>/hosts.toml).
type Endpoint struct {
	Scheme       string // "https" or "http"
	Host         string // host[:port]
	Path         string // API root, "/v2" unless the config says otherwise
	Capabilities []string
	Header       http.Header
	TLS          *tls.Config // nil for http
	Mirror       bool        // a [host] entry rather than the upstream server
	// PlainHTTPCredentials allows credentials over http (hosts.toml
	// plain_http_credentials).
	PlainHTTPCredentials bool

	key   string // identity of the connection settings, for transport reuse
	tlsID string // digest of the CA and client certificate files' contents
}

// URL is the API root of the endpoint.
func (e Endpoint) URL() string { return e.Scheme + "://" + e.Host + e.Path }

func (e Endpoint) can(capability string) bool {
	for _, c := range e.Capabilities {
		if c == capability {
			return true
		}
	}
	return false
}

// hostsFile is the on-disk form: the server's settings at the top level,
// each mirror's under [host."URL"]. ca and client accept the shapes
// containerd does.
type hostsFile struct {
	Server string              `toml:"server"`
	Host   map[string]hostFile `toml:"host"`
	hostFile
}

type hostFile struct {
	Capabilities []string       `toml:"capabilities"`
	CA           any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	// PlainHTTPCredentials (shim's own key) lets the CRI credentials go to
	// this http:// endpoint (and to a token server it names over http)
	// in clear text. Without it they are never sent over plain HTTP.
	PlainHTTPCredentials bool `toml:"plain_http_credentials"`
}

// maxHostsFile caps the size of a hosts.toml.
const maxHostsFile = 1 << 20

// Endpoints returns the endpoints to try for registry host, mirrors first
// in file order, the upstream server last. With no hosts.toml the
// upstream is https://host (registry-1.docker.io for docker.io).
func Endpoints(configDir, host string) ([]Endpoint, error) {
	dir, data, err := readHostsFile(configDir, host)
	if err != nil {
		return nil, err
	}
	server := defaultServer(host)
	if data == nil {
		ep, err := newEndpoint(server, hostFile{}, dir)
		if err != nil {
			return nil, err
		}
		return []Endpoint{ep}, nil
	}
	var hf hostsFile
	md, err := toml.Decode(string(data), &hf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", filepath.Join(dir, "hosts.toml"), err, errdefs.ErrInvalidArgument)
	}
	var eps []Endpoint
	// Mirrors in the order they appear in the file.
	for _, key := range md.Keys() {
		if len(key) != 2 || key[0] != "host" {
			continue
		}
		ep, err := newEndpoint(key[1], hf.Host[key[1]], dir)
		if err != nil {
			return nil, fmt.Errorf("%s: host %q: %w", dir, key[1], err)
		}
		ep.Mirror = true
		eps = append(eps, ep)
	}
	if hf.Server != "" {
		server = hf.Server
	}
	ep, err := newEndpoint(server, hf.hostFile, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: server %q: %w", dir, server, err)
	}
	return append(eps, ep), nil
}

func defaultServer(host string) string {
	if host == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + host
}

// readHostsFile finds <configDir>/<host>/hosts.toml, falling back to
// <configDir>/_default/hosts.toml. No file is not an error.
func readHostsFile(configDir, host string) (string, []byte, error) {
	if configDir == "" {
		return "", nil, nil
	}
	if strings.ContainsAny(host, "/\\") || host == ".." || host == "." {
		return "", nil, fmt.Errorf("registry host %q: %w", host, errdefs.ErrInvalidArgument)
	}
	for _, name := range []string{host, "_default"} {
		dir := filepath.Join(configDir, name)
		f, err := os.Open(filepath.Join(dir, "hosts.toml"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		data, err := capread.Read(f, maxHostsFile)
		f.Close()
		if err != nil {
			return "", nil, fmt.Errorf("%s/hosts.toml: %w", dir, err)
		}
		return dir, data, nil
	}
	return filepath.Join(configDir, host), nil, nil
}

func newEndpoint(raw string, h hostFile, dir string) (Endpoint, error) {
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Endpoint{}, fmt.Errorf("scheme %q: want http or https: %w", u.Scheme, errdefs.ErrInvalidArgument)
	}
	if u.Host == "" {
		return Endpoint{}, fmt.Errorf("no host in %q: %w", raw, errdefs.ErrInvalidArgument)
	}
	path := strings.TrimSuffix(u.Path, "/")
	if path == "" {
		path = "/v2"
	} else if !h.OverridePath && !strings.HasSuffix(path, "/v2") {
		path += "/v2"
	}
	caps := h.Capabilities
	if len(caps) == 0 {
		caps = []string{"pull", "resolve", "push"}
	}
	ep := Endpoint{Scheme: u.Scheme, Host: u.Host, Path: path, Capabilities: caps, Header: toHeader(h.Header),
		PlainHTTPCredentials: h.PlainHTTPCredentials,
		key:                  fmt.Sprintf("%s://%s|%v|%v|%v|%s", u.Scheme, u.Host, h.CA, h.Client, h.SkipVerify != nil && *h.SkipVerify, dir)}
	if u.Scheme == "https" {
		if ep.TLS, ep.tlsID, err = tlsConfig(h.CA, h.Client, h.SkipVerify, dir); err != nil {
			return Endpoint{}, err
		}
	}
	return ep, nil
}

// tlsConfig reads the CA and client certificate files (every pull, so a
// changed file takes effect on the next one) and returns the config and a
// digest of what it read, which tells a cached transport it is stale.
func tlsConfig(ca, client any, skipVerify *bool, dir string) (*tls.Config, string, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if skipVerify != nil && *skipVerify {
		cfg.InsecureSkipVerify = true
	}
	id := sha256.New()
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(resolvePath(dir, p))
		if err == nil {
			fmt.Fprintf(id, "%s %d\n", p, len(b))
			id.Write(b)
		}
		return b, err
	}
	cas, err := stringList(ca)
	if err != nil {
		return nil, "", fmt.Errorf("ca: %w", err)
	}
	if len(cas) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, p := range cas {
			pem, err := read(p)
			if err != nil {
				return nil, "", fmt.Errorf("ca %q: %w: %w", p, err, errdefs.ErrFailedPrecondition)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, "", fmt.Errorf("ca %q: no certificates: %w", p, errdefs.ErrInvalidArgument)
			}
		}
		cfg.RootCAs = pool
	}
	pairs, err := clientPairs(client)
	if err != nil {
		return nil, "", fmt.Errorf("client: %w", err)
	}
	for _, p := range pairs {
		key := p[1]
		if key == "" {
			key = p[0]
		}
		certPEM, err := read(p[0])
		if err != nil {
			return nil, "", fmt.Errorf("client certificate %q: %w: %w", p[0], err, errdefs.ErrFailedPrecondition)
		}
		keyPEM, err := read(key)
		if err != nil {
			return nil, "", fmt.Errorf("client key %q: %w: %w", key, err, errdefs.ErrFailedPrecondition)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, "", fmt.Errorf("client certificate %q: %w: %w", p[0], err, errdefs.ErrInvalidArgument)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	return cfg, hex.EncodeToString(id.Sum(nil)), nil
}

func resolvePath(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// stringList accepts "a" or ["a", "b"].
func stringList(v any) ([]string, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{t}, nil
	case []any:
		var out []string
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("want strings, got %T: %w", e, errdefs.ErrInvalidArgument)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a string or a list of strings, got %T: %w", v, errdefs.ErrInvalidArgument)
}

// clientPairs accepts "both.pem", ["cert", "key"] or [["cert", "key"], ...].
func clientPairs(v any) ([][2]string, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		return [][2]string{{t, ""}}, nil
	case []any:
		if len(t) == 0 {
			return nil, nil
		}
		if _, ok := t[0].(string); ok {
			l, err := stringList(t)
			if err != nil {
				return nil, err
			}
			if len(l) > 2 {
				return nil, fmt.Errorf("want [cert, key], got %d entries: %w", len(l), errdefs.ErrInvalidArgument)
			}
			p := [2]string{l[0], ""}
			if len(l) == 2 {
				p[1] = l[1]
			}
			return [][2]string{p}, nil
		}
		var out [][2]string
		for _, e := range t {
			sub, err := clientPairs(e)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported client value %T: %w", v, errdefs.ErrInvalidArgument)
}

func toHeader(m map[string]any) http.Header {
	if len(m) == 0 {
		return nil
	}
	h := http.Header{}
	for k, v := range m {
		l, _ := stringList(v)
		for _, s := range l {
			h.Add(k, s)
		}
	}
	return h
}

// httpTransport builds the base transport for an endpoint.
func httpTransport(ep Endpoint) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:       ep.TLS,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}
