package imagestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// Media types shim accepts for manifests.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	mediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
)

var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	mediaTypeDockerManifestList,
	mediaTypeDockerManifest,
}, ", ")

// Auth is the registry credential kubelet passes with a pull.
type Auth struct {
	Username      string
	Password      string
	Auth          string // base64 "user:password"
	ServerAddress string // registry the credential is for; "" means any
	IdentityToken string
	RegistryToken string
}

func (a *Auth) empty() bool {
	return a == nil || a.Username == "" && a.Password == "" && a.Auth == "" && a.IdentityToken == "" && a.RegistryToken == ""
}

func (a *Auth) config() authn.AuthConfig {
	return authn.AuthConfig{
		Username:      a.Username,
		Password:      a.Password,
		Auth:          a.Auth,
		IdentityToken: a.IdentityToken,
		RegistryToken: a.RegistryToken,
	}
}

// credentials says whether the pull's credentials go to endpoint ep of
// registry host regHost (the image reference's), and why not. They belong
// to the registry the image reference names: they go to its upstream
// server (the hosts.toml server, which the operator says serves it) or to
// an entry for that very host, never to a mirror of it, and never over
// plain HTTP unless the entry has plain_http_credentials. A server address
// kubelet gives must name that registry.
func (a *Auth) credentials(regHost string, ep Endpoint) (ok bool, withheld string) {
	if a.empty() {
		return false, ""
	}
	if a.ServerAddress != "" && serverHost(a.ServerAddress) != regHost {
		return false, ""
	}
	if ep.Mirror && serverHost(ep.Host) != regHost {
		return false, ""
	}
	if ep.Scheme != "https" && !ep.PlainHTTPCredentials {
		return false, "plain HTTP"
	}
	return true, ""
}

func serverHost(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if s == "index.docker.io" || s == "registry-1.docker.io" {
		return "docker.io"
	}
	return s
}

// Registry resolves and fetches images through the endpoints configured
// for each registry host.
type Registry struct {
	configDir string
	backoff   transport.Backoff

	mu    sync.Mutex
	bases map[string]baseTransport // per endpoint, to reuse connections
	// anon are the transports of anonymous sessions, reused by later
	// pulls of the same repository from the same endpoint for anonTTL:
	// each is the outcome of a ping (two requests when https is tried
	// beside http) and, for a registry that wants a token, a token.
	anon    map[anonKey]anonTransport
	anonTTL time.Duration
}

// anonTTL is how long an anonymous session's transport is reused. A
// registry that starts to refuse it (401, 403) gets a new one at once.
const anonTTL = time.Minute

type anonKey struct{ ep, tlsID, scope string }

type anonTransport struct {
	rt   http.RoundTripper
	kept time.Time
}

type baseTransport struct {
	tlsID string // the certificate files it was built with
	rt    http.RoundTripper
	http  *http.Transport
}

// NewRegistry returns a client reading hosts.toml files under configDir.
func NewRegistry(configDir string) *Registry {
	return &Registry{
		configDir: configDir,
		backoff:   transport.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4},
		bases:     map[string]baseTransport{},
		anon:      map[anonKey]anonTransport{},
		anonTTL:   anonTTL,
	}
}

// anonTransport returns the reusable transport of an anonymous session
// for key, if there is one.
func (r *Registry) anonTransport(key anonKey) http.RoundTripper {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.anon[key]
	if !ok {
		return nil
	}
	if r.expired(a, time.Now()) {
		delete(r.anon, key)
		return nil
	}
	return a.rt
}

func (r *Registry) expired(a anonTransport, now time.Time) bool {
	return now.Sub(a.kept) >= r.anonTTL
}

func (r *Registry) keepAnon(key anonKey, rt http.RoundTripper) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for k, a := range r.anon { // the map holds no more than what is in use
		if r.expired(a, now) {
			delete(r.anon, k)
		}
	}
	r.anon[key] = anonTransport{rt: rt, kept: now}
}

// forgetAnon drops rt, the transport kept for key (not one kept since).
func (r *Registry) forgetAnon(key anonKey, rt http.RoundTripper) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.anon[key]; ok && a.rt == rt {
		delete(r.anon, key)
	}
}

// base returns the shared transport of an endpoint (same host, scheme and
// TLS settings), so connections are reused across pulls. When the CA or
// client certificate files changed since it was built, a new one replaces
// it and the old one's idle connections are closed (pulls using it finish
// on it).
func (r *Registry) base(ep Endpoint) http.RoundTripper {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.bases[ep.key]
	if ok && b.tlsID == ep.tlsID {
		return b.rt
	}
	if ok {
		b.http.CloseIdleConnections()
	}
	ht := httpTransport(ep)
	rt := transport.NewRetry(ht,
		transport.WithRetryBackoff(r.backoff),
		transport.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout))
	r.bases[ep.key] = baseTransport{tlsID: ep.tlsID, rt: rt, http: ht}
	return rt
}

// closeIdle closes the idle connections of every cached transport.
func (r *Registry) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bases {
		b.http.CloseIdleConnections()
	}
}

// session is one pull's view of a repository: the endpoints to try, each
// authenticated on first use.
type session struct {
	reg  *Registry
	ref  Ref
	auth *Auth
	eps  []Endpoint
	// withheld names endpoints that got no credentials because they are
	// plain HTTP, for the error a registry's 401 becomes.
	withheld []string

	mu    sync.Mutex // guards rts, errs, anon and first: layers run in parallel
	rts   []http.RoundTripper
	errs  []error
	anon  map[int]anonUse // the endpoints used anonymously
	first int             // index of the endpoint that served the manifest
}

// anonUse is the reusable transport an anonymous session uses for an
// endpoint.
type anonUse struct {
	key anonKey
	rt  http.RoundTripper
}

func (r *Registry) session(ref Ref, auth *Auth) (*session, error) {
	eps, err := Endpoints(r.configDir, ref.Domain())
	if err != nil {
		return nil, err
	}
	return &session{reg: r, ref: ref, auth: auth, eps: eps, rts: make([]http.RoundTripper, len(eps)), errs: make([]error, len(eps)), anon: map[int]anonUse{}}, nil
}

func (s *session) transport(ctx context.Context, i int) (http.RoundTripper, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rts[i] != nil {
		return s.rts[i], nil
	}
	if s.errs[i] != nil {
		return nil, s.errs[i]
	}
	ep := s.eps[i]
	var opts []name.Option
	if ep.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(ep.Host, opts...)
	if err != nil {
		s.errs[i] = fmt.Errorf("registry host %q: %w: %w", ep.Host, err, errdefs.ErrInvalidArgument)
		return nil, s.errs[i]
	}
	scope := reg.Repo(s.ref.Path()).Scope(transport.PullScope)
	auth, base := authn.Anonymous, s.reg.base(ep)
	ok, why := s.auth.credentials(serverHost(s.ref.Domain()), ep)
	if ok {
		auth = authn.FromConfig(s.auth.config())
		// The ping may still fall back to http (go-containerregistry does
		// for loopback and private addresses), and a token server may be
		// http: credentials never go over plain HTTP unless allowed.
		base = plainHTTPGuard{inner: base, allow: ep.PlainHTTPCredentials}
	} else if why != "" {
		s.withheld = append(s.withheld, ep.URL())
		log.G(ctx).Infof("not sending the credentials to %s: %s (hosts.toml plain_http_credentials allows it)", ep.URL(), why)
	}
	key := anonKey{ep: ep.key, tlsID: ep.tlsID, scope: scope}
	var rt http.RoundTripper
	if !ok {
		rt = s.reg.anonTransport(key)
	}
	if rt == nil {
		var err error
		rt, err = transport.NewWithContext(ctx, reg, auth, base, []string{scope})
		if err != nil {
			err = classifyRegistryErr(err)
			if ctx.Err() == nil {
				s.errs[i] = err // a cancelled caller's error is not the endpoint's
			}
			return nil, err
		}
		if !ok {
			s.reg.keepAnon(key, rt)
		}
	}
	if !ok {
		s.anon[i] = anonUse{key: key, rt: rt}
	}
	if ep.Header != nil {
		rt = headerTransport{rt, ep.Header, ep.Host}
	}
	s.rts[i] = rt
	return rt, nil
}

// plainHTTPGuard refuses to send a request carrying credentials over
// plain HTTP unless the endpoint's hosts.toml entry allows it.
type plainHTTPGuard struct {
	inner http.RoundTripper
	allow bool
}

func (g plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !g.allow && req.Header.Get("Authorization") != "" {
		return nil, fmt.Errorf("refusing to send credentials to %s over plain HTTP (hosts.toml plain_http_credentials allows it): %w",
			req.URL.Host, errdefs.ErrFailedPrecondition)
	}
	return g.inner.RoundTrip(req)
}

// headerTransport adds the hosts.toml headers to requests for the
// endpoint's own host only, not to hosts a redirect leads to.
type headerTransport struct {
	inner http.RoundTripper
	h     http.Header
	host  string
}

func (t headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.inner.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	for k, v := range t.h {
		req.Header[k] = v
	}
	return t.inner.RoundTrip(req)
}

// order lists endpoint indexes able to do capability, the one that served
// the manifest first.
func (s *session) order(capability string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	if s.eps[s.first].can(capability) {
		out = append(out, s.first)
	}
	for i, ep := range s.eps {
		if i != s.first && ep.can(capability) {
			out = append(out, i)
		}
	}
	return out
}

// fetched is a manifest or index as the registry sent it.
type fetched struct {
	body      []byte
	mediaType string
	digest    digest.Digest
}

// manifest fetches object (a tag or a digest) from the first endpoint that
// has it. A digest is verified; size, when > 0, is checked.
func (s *session) manifest(ctx context.Context, object string, want digest.Digest, size int64) (fetched, error) {
	capability := "pull"
	if want == "" {
		capability = "resolve"
	}
	var errs []error
	for _, i := range s.order(capability) {
		f, err := s.manifestFrom(ctx, i, object, want, size)
		if err == nil {
			s.mu.Lock()
			s.first = i
			s.mu.Unlock()
			return f, nil
		}
		log.G(ctx).WithError(err).Debugf("manifest %s from %s", object, s.eps[i].URL())
		if ctx.Err() != nil {
			return fetched{}, err
		}
		errs = append(errs, err)
	}
	return fetched{}, s.bestError(errs)
}

func (s *session) manifestFrom(ctx context.Context, i int, object string, want digest.Digest, size int64) (fetched, error) {
	rt, err := s.transport(ctx, i)
	if err != nil {
		return fetched{}, err
	}
	u := s.eps[i].URL() + "/" + s.ref.Path() + "/manifests/" + object
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fetched{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	// Registries redirect manifests too (registry.k8s.io does).
	resp, err := client(rt).Do(req)
	if err != nil {
		s.refused(ctx, i, nil, err)
		return fetched{}, classifyRegistryErr(err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		s.refused(ctx, i, resp, nil)
		return fetched{}, classifyRegistryErr(err)
	}
	body, err := capread.Read(resp.Body, maxManifestSize)
	if errors.Is(err, capread.ErrTooLarge) {
		return fetched{}, fmt.Errorf("manifest %s of %s: %w", object, s.ref.Name(), err)
	} else if err != nil {
		return fetched{}, classifyRegistryErr(err)
	}
	if size > 0 && int64(len(body)) != size {
		return fetched{}, fmt.Errorf("manifest %s of %s: got %d bytes, descriptor says %d: %w", object, s.ref.Name(), len(body), size, errdefs.ErrFailedPrecondition)
	}
	alg := digest.Canonical
	if want != "" {
		alg = want.Algorithm()
		if !alg.Available() {
			return fetched{}, fmt.Errorf("digest algorithm %q: %w", alg, errdefs.ErrInvalidArgument)
		}
	}
	got := alg.FromBytes(body)
	if want != "" && got != want {
		return fetched{}, fmt.Errorf("manifest %s of %s has digest %s: %w", object, s.ref.Name(), got, errdefs.ErrFailedPrecondition)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); want == "" && h != "" && h != got.String() {
		log.G(ctx).Warnf("registry %s sent Docker-Content-Digest %s for a manifest whose digest is %s", s.eps[i].Host, h, got)
	}
	mt := resp.Header.Get("Content-Type")
	if j := strings.IndexByte(mt, ';'); j >= 0 {
		mt = strings.TrimSpace(mt[:j])
	}
	return fetched{body: body, mediaType: mt, digest: got}, nil
}

// blob opens blob dgst (of size bytes) from offset, trying endpoints in order. It returns
// the body and the offset the body really starts at (0 when the registry
// ignores the range).
func (s *session) blob(ctx context.Context, dgst digest.Digest, offset, size int64) (io.ReadCloser, int64, error) {
	var errs []error
	for _, i := range s.order("pull") {
		body, start, err := s.blobFrom(ctx, i, dgst, offset, size)
		if err == nil {
			return body, start, nil
		}
		if ctx.Err() != nil {
			return nil, 0, err
		}
		errs = append(errs, err)
	}
	return nil, 0, s.bestError(errs)
}

func (s *session) blobFrom(ctx context.Context, i int, dgst digest.Digest, offset, size int64) (io.ReadCloser, int64, error) {
	rt, err := s.transport(ctx, i)
	if err != nil {
		return nil, 0, err
	}
	u := s.eps[i].URL() + "/" + s.ref.Path() + "/blobs/" + dgst.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	if offset > 0 && offset < size {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-"+strconv.FormatInt(size-1, 10))
	}
	// A download that stops making progress is cut, so a stalled
	// connection cannot hold a pull (and every pull joined to it) forever.
	rctx, cancel := context.WithCancel(ctx)
	req = req.WithContext(rctx)
	// Registries redirect blobs to storage; follow with a client.
	resp, err := client(rt).Do(req)
	if err != nil {
		cancel()
		s.refused(ctx, i, nil, err)
		return nil, 0, classifyRegistryErr(err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return newIdleReader(resp.Body, blobIdleTimeout, cancel), 0, nil
	case http.StatusPartialContent:
		return newIdleReader(resp.Body, blobIdleTimeout, cancel), offset, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		cancel()
		return s.blobFrom(ctx, i, dgst, 0, size)
	}
	defer cancel()
	defer resp.Body.Close()
	s.refused(ctx, i, resp, nil)
	return nil, 0, classifyRegistryErr(transport.CheckError(resp, http.StatusOK, http.StatusPartialContent))
}

// refused forgets the reusable anonymous transport of endpoint i when the
// endpoint gave no answer to a request made with it (err: it may have
// moved to another scheme) or refused it (resp 401, 403: its access rules
// changed, its token no longer does), so the next session pings again. A
// caller that gave up, or the storage a redirect led to, says nothing
// about the transport.
func (s *session) refused(ctx context.Context, i int, resp *http.Response, err error) {
	if ctx.Err() != nil {
		return
	}
	host := ""
	var uerr *url.Error
	switch {
	case resp != nil:
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
			return
		}
		if resp.Request != nil {
			host = resp.Request.URL.Host
		}
	case errors.As(err, &uerr):
		if u, perr := url.Parse(uerr.URL); perr == nil {
			host = u.Host
		}
	}
	if host != s.eps[i].Host {
		return
	}
	s.mu.Lock()
	use, ok := s.anon[i]
	s.mu.Unlock()
	if ok {
		s.reg.forgetAnon(use.key, use.rt)
	}
}

// maxRedirects bounds the redirects a registry request follows.
const maxRedirects = 10

// blobIdleTimeout is how long a blob download may go without a byte.
var blobIdleTimeout = 2 * time.Minute

func client(rt http.RoundTripper) *http.Client {
	return &http.Client{Transport: rt, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("%d redirects: %w", len(via), errdefs.ErrUnavailable)
		}
		return nil
	}}
}

// idleReader cancels the request when no data arrives for a while.
type idleReader struct {
	rc      io.ReadCloser
	timer   *time.Timer
	idle    time.Duration
	stalled atomic.Bool
	cancel  context.CancelFunc
}

func newIdleReader(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *idleReader {
	r := &idleReader{rc: rc, idle: idle, cancel: cancel}
	r.timer = time.AfterFunc(idle, func() {
		r.stalled.Store(true)
		cancel()
	})
	return r
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.timer.Reset(r.idle)
	}
	if err != nil && r.stalled.Load() {
		return n, fmt.Errorf("no data for %s: %w", r.idle, errdefs.ErrUnavailable)
	}
	return n, err
}

func (r *idleReader) Close() error {
	r.timer.Stop()
	err := r.rc.Close()
	r.cancel()
	return err
}

// classifyRegistryErr gives a registry or network error its class.
func classifyRegistryErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errdefs.Classified(err) {
		return err
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		case http.StatusUnauthorized:
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
		case http.StatusForbidden:
			return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
		case http.StatusTooManyRequests:
			return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
				return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
			case transport.UnauthorizedErrorCode:
				return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
			case transport.DeniedErrorCode:
				return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
			}
		}
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
}

// bestError picks the most telling of the endpoints' errors: an answer
// from a registry (not found, denied) beats a host that could not be
// reached. A 401 says which endpoints got no credentials and why.
func (s *session) bestError(errs []error) error {
	err := bestError(s.ref, errs)
	s.mu.Lock()
	withheld := s.withheld
	s.mu.Unlock()
	if errdefs.Is(err, errdefs.ErrUnauthenticated) && len(withheld) > 0 {
		return fmt.Errorf("%w (credentials were not sent to %s: plain HTTP; hosts.toml plain_http_credentials allows it)",
			err, strings.Join(withheld, ", "))
	}
	return err
}

func bestError(ref Ref, errs []error) error {
	if len(errs) == 0 {
		return fmt.Errorf("%s: no registry endpoint can pull it: %w", ref, errdefs.ErrFailedPrecondition)
	}
	for _, class := range []error{errdefs.ErrUnauthenticated, errdefs.ErrPermissionDenied, errdefs.ErrFailedPrecondition, errdefs.ErrNotFound} {
		for _, e := range errs {
			if errdefs.Is(e, class) {
				return e
			}
		}
	}
	return errs[len(errs)-1]
}
