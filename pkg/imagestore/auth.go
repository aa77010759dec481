package imagestore

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// maxAuthField caps each credential field: registry tokens are a few KiB.
const maxAuthField = 64 << 10

// Validate checks credentials before anything is sent: every field short
// and free of control characters (they end up in HTTP headers and token
// requests, where a newline or NUL is an injection or a request the
// client refuses to send), auth valid base64 of "user:password", the
// server address a host or URL.
func (a *Auth) Validate() error {
	if a == nil {
		return nil
	}
	for _, f := range []struct{ name, v string }{
		{"username", a.Username}, {"password", a.Password}, {"auth", a.Auth},
		{"server_address", a.ServerAddress}, {"identity_token", a.IdentityToken}, {"registry_token", a.RegistryToken},
	} {
		if len(f.v) > maxAuthField {
			return fmt.Errorf("auth config: %s is %d bytes, more than %d: %w", f.name, len(f.v), maxAuthField, errdefs.ErrInvalidArgument)
		}
		if i := strings.IndexFunc(f.v, isControl); i >= 0 {
			// Never echo a credential: name the field and the offset only.
			return fmt.Errorf("auth config: %s has a control character (%U) at byte %d: %w", f.name, []rune(f.v[i:])[0], i, errdefs.ErrInvalidArgument)
		}
	}
	if a.Auth != "" {
		dec, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			dec, err = base64.RawStdEncoding.DecodeString(a.Auth)
		}
		if err != nil {
			return fmt.Errorf("auth config: auth is not base64: %w", errdefs.ErrInvalidArgument)
		}
		user, pass, ok := strings.Cut(string(dec), ":")
		if !ok {
			return fmt.Errorf("auth config: auth does not decode to \"user:password\": %w", errdefs.ErrInvalidArgument)
		}
		if strings.IndexFunc(user, isControl) >= 0 || strings.IndexFunc(pass, isControl) >= 0 {
			return fmt.Errorf("auth config: auth decodes to a control character: %w", errdefs.ErrInvalidArgument)
		}
	}
	if s := a.ServerAddress; s != "" {
		if strings.ContainsAny(s, " \\") {
			return fmt.Errorf("auth config: server_address %q is not a host or URL: %w", s, errdefs.ErrInvalidArgument)
		}
		if strings.Contains(s, "://") {
			if u, err := url.Parse(s); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
				return fmt.Errorf("auth config: server_address %q is not an http(s) URL: %w", s, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
