package imagestore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Ref is a normalized image reference, as kubelet spells it:
// "busybox" is docker.io/library/busybox:latest.
type Ref struct {
	named reference.Named
}

// ParseRef normalizes s. A reference with both a tag and a digest keeps the
// digest (the tag is informational only, as in containerd).
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("empty image reference: %w", errdefs.ErrInvalidArgument)
	}
	if len(s) > 4096 || strings.ContainsAny(s, "\x00\n\r\t ") {
		return Ref{}, fmt.Errorf("image reference %q: invalid characters or length: %w", trunc(s), errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, fmt.Errorf("image reference %q: %w: %w", trunc(s), err, errdefs.ErrInvalidArgument)
	}
	if _, port, ok := strings.Cut(strings.TrimPrefix(reference.Domain(named), "["), "]"); ok {
		// An IPv6 address: [addr] or [addr]:port.
		if port != "" && !validPort(strings.TrimPrefix(port, ":")) {
			return Ref{}, fmt.Errorf("image reference %q: port out of range: %w", trunc(s), errdefs.ErrInvalidArgument)
		}
	} else if _, port, ok := strings.Cut(reference.Domain(named), ":"); ok && !validPort(port) {
		return Ref{}, fmt.Errorf("image reference %q: port out of range: %w", trunc(s), errdefs.ErrInvalidArgument)
	}
	if c, ok := named.(reference.Canonical); ok {
		if _, tagged := named.(reference.Tagged); tagged {
			named, _ = reference.WithDigest(reference.TrimNamed(named), c.Digest())
		}
		return Ref{named: named}, nil
	}
	return Ref{named: reference.TagNameOnly(named)}, nil
}

// String is the full normalized reference.
func (r Ref) String() string { return r.named.String() }

// Name is the repository name including the registry host.
func (r Ref) Name() string { return r.named.Name() }

// Domain is the registry host ("docker.io").
func (r Ref) Domain() string { return reference.Domain(r.named) }

// Path is the repository path inside the registry ("library/busybox").
func (r Ref) Path() string { return reference.Path(r.named) }

// Tag is the tag, "" for a digest reference.
func (r Ref) Tag() string {
	if t, ok := r.named.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}

// Digest is the digest of a digest reference, "" otherwise.
func (r Ref) Digest() digest.Digest {
	if c, ok := r.named.(reference.Canonical); ok {
		return c.Digest()
	}
	return ""
}

// Object is what the registry is asked for: the digest if there is one, else the tag.
func (r Ref) Object() string {
	if d := r.Digest(); d != "" {
		return d.String()
	}
	return r.Tag()
}

// WithDigest is repo@dgst for r's repository.
func (r Ref) WithDigest(dgst digest.Digest) string {
	return r.Name() + "@" + dgst.String()
}

// lookupKind says how a user-supplied string identifies an image.
type lookupKind int

const (
	lookupRef lookupKind = iota // tag or repo@digest reference
	lookupID                    // full image id "sha256:<64 hex>" or bare 64 hex
)

// parseLookup classifies a string passed to ImageStatus/RemoveImage.
func parseLookup(s string) (lookupKind, string, error) {
	if d, err := digest.Parse(s); err == nil {
		return lookupID, d.String(), nil
	}
	if len(s) == 64 && isHex(s) {
		return lookupID, "sha256:" + s, nil
	}
	r, err := ParseRef(s)
	if err != nil {
		return 0, "", err
	}
	return lookupRef, r.String(), nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func trunc(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}
