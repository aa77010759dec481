package imagestore

import (
	"encoding/base64"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/errdefs/errgrpc"
)

// badAuths are credentials a client may send that must be refused before
// any request: real control bytes, not their escapes.
func badAuths() map[string]*Auth {
	b64 := base64.StdEncoding.EncodeToString
	return map[string]*Auth{
		"auth with a newline":            {Auth: b64([]byte("alice:s3cret")) + "\n"},
		"auth with a newline inside":     {Auth: "YWxp\nY2U6czNjcmV0"},
		"auth with NUL":                  {Auth: "YWxpY2U6czNjcmV0\x00"},
		"auth not base64":                {Auth: "alice:s3cret"},
		"auth without a colon":           {Auth: b64([]byte("alice"))},
		"auth decoding to a newline":     {Auth: b64([]byte("alice:s3\ncret"))},
		"username with a newline":        {Username: "alice\n", Password: "s3cret"},
		"username with NUL":              {Username: "al\x00ice", Password: "s3cret"},
		"password with CR LF":            {Username: "alice", Password: "s3cret\r\nX-Injected: 1"},
		"password with DEL":              {Username: "alice", Password: "s3cret\x7f"},
		"identity token with a newline":  {IdentityToken: "tk-9f3\n"},
		"registry token with CR LF":      {RegistryToken: "tk-9f3\r\nX-Injected: 1"},
		"registry token with NUL":        {RegistryToken: "tk-9f3\x00"},
		"server address with a newline":  {Username: "alice", Password: "s3cret", ServerAddress: "registry.example\n"},
		"server address with a space":    {Username: "alice", Password: "s3cret", ServerAddress: "registry example"},
		"server address with bad scheme": {Username: "alice", Password: "s3cret", ServerAddress: "ftp://registry.example"},
		"password of 70000 bytes":        {Username: "alice", Password: strings.Repeat("p", 70000)},
	}
}

func TestAuthValidate(t *testing.T) {
	for name, a := range badAuths() {
		err := a.Validate()
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: want invalid argument, got %v", name, err)
			continue
		}
		if s, _ := status.FromError(errgrpc.ToGRPC(err)); s.Code() != codes.InvalidArgument {
			t.Errorf("%s: gRPC code %v", name, s.Code())
		}
		for _, secret := range []string{"s3cret", "tk-9f3", "s3cr", "cret"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error shows the credential: %v", name, err)
			}
		}
	}
	b64 := base64.StdEncoding.EncodeToString
	for name, a := range map[string]*Auth{
		"none":              nil,
		"empty":             {},
		"user and password": {Username: "alice", Password: "p@ss w:rd!é€"},
		"auth":              {Auth: b64([]byte("alice:s3cret"))},
		"auth unpadded":     {Auth: strings.TrimRight(b64([]byte("alice:s3cre")), "=")},
		"docker hub":        {Auth: b64([]byte("a:b")), ServerAddress: "https://index.docker.io/v1/"},
		"host:port":         {Username: "a", Password: "b", ServerAddress: "registry.example:5000"},
		"host and path":     {Username: "a", Password: "b", ServerAddress: "registry.example/team"},
		"glob":              {Username: "a", Password: "b", ServerAddress: "*.registry.example"},
		"registry token":    {RegistryToken: strings.Repeat("t", 8192)},
		"identity token":    {IdentityToken: "eyJhbGciOi.eyJzdWIiOi.sig-_"},
	} {
		if err := a.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestPullRefusesBadInputBeforeTheNetwork: a PullImage with bad
// credentials or a bad reference fails with InvalidArgument and no
// request reaches the registry.
func TestPullRefusesBadInputBeforeTheNetwork(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "lib/img:1", simpleImage(t, "input"))
	s := newStore(t, "overlay", "")
	reg.reset()
	for name, a := range badAuths() {
		_, err := s.Pull(ctx, reg.host+"/lib/img:1", a, nil)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: want invalid argument, got %v", name, err)
		}
	}
	for _, ref := range []string{"", "\n", reg.host + "/lib/img:1\n", reg.host + "/lib/img:\x00", reg.host + "/LIB/img:1",
		"127.0.0.1:99999/lib/img:1", "127.0.0.1:0/lib/img:1", reg.host + "/lib/img@sha256:abc", strings.Repeat("a/", 3000) + "x"} {
		if _, err := s.Pull(ctx, ref, nil, nil); !errdefs.IsInvalidArgument(err) {
			t.Errorf("pull %q: want invalid argument, got %v", ref, err)
		}
		if _, err := s.Get(ctx, ref); !errdefs.IsInvalidArgument(err) {
			t.Errorf("get %q: want invalid argument, got %v", ref, err)
		}
		if err := s.Remove(ctx, ref); !errdefs.IsInvalidArgument(err) {
			t.Errorf("remove %q: want invalid argument, got %v", ref, err)
		}
	}
	if n := len(reg.requests); n != 0 {
		t.Errorf("bad input reached the registry: %v", reg.requests)
	}
	s.assertEmpty(t)
}
