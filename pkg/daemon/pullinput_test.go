package daemon

import (
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPullImageBadInput: PullImage, ImageStatus and RemoveImage with bad
// input (real newline and NUL bytes in the credentials, bad references)
// answer InvalidArgument, and no request reaches the registry. Before, an
// auth value with a newline tried every endpoint and came back Unavailable.
func TestPullImageBadInput(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	var hits atomic.Int64
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	(&testRegistry{host: host}).push(t, "in/img:1", img)
	hits.Store(0)
	d := e.start()

	ref := host + "/in/img:1"
	good := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	for name, req := range map[string]*runtimeapi.PullImageRequest{
		"auth with a newline":         {Image: &runtimeapi.ImageSpec{Image: ref}, Auth: &runtimeapi.AuthConfig{Auth: good + "\n"}},
		"auth with NUL":               {Image: &runtimeapi.ImageSpec{Image: ref}, Auth: &runtimeapi.AuthConfig{Auth: good[:4] + "\x00" + good[4:]}},
		"password with NUL":           {Image: &runtimeapi.ImageSpec{Image: ref}, Auth: &runtimeapi.AuthConfig{Username: "alice", Password: "s3\x00cret"}},
		"registry token with CR LF":   {Image: &runtimeapi.ImageSpec{Image: ref}, Auth: &runtimeapi.AuthConfig{RegistryToken: "t\r\nX-Injected: 1"}},
		"server address with a tab":   {Image: &runtimeapi.ImageSpec{Image: ref}, Auth: &runtimeapi.AuthConfig{Username: "a", Password: "b", ServerAddress: host + "\t"}},
		"no image":                    {Image: &runtimeapi.ImageSpec{}},
		"reference with a newline":    {Image: &runtimeapi.ImageSpec{Image: ref + "\n"}},
		"reference with NUL":          {Image: &runtimeapi.ImageSpec{Image: host + "/in/img\x00:1"}},
		"reference with a bad port":   {Image: &runtimeapi.ImageSpec{Image: "127.0.0.1:99999/in/img:1"}},
		"reference of 70000 bytes":    {Image: &runtimeapi.ImageSpec{Image: host + "/" + strings.Repeat("a", 70000)}},
		"reference with upper case":   {Image: &runtimeapi.ImageSpec{Image: host + "/In/img:1"}},
		"reference with a bad digest": {Image: &runtimeapi.ImageSpec{Image: host + "/in/img@sha256:0123"}},
	} {
		_, err := d.is.PullImage(bg, req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("PullImage, %s: want InvalidArgument, got %v", name, err)
		}
		if req.Image.GetImage() == "" {
			continue
		}
		if _, err := d.is.ImageStatus(bg, &runtimeapi.ImageStatusRequest{Image: req.Image}); req.Auth == nil && status.Code(err) != codes.InvalidArgument {
			t.Errorf("ImageStatus, %s: want InvalidArgument, got %v", name, err)
		}
		if _, err := d.is.RemoveImage(bg, &runtimeapi.RemoveImageRequest{Image: req.Image}); req.Auth == nil && status.Code(err) != codes.InvalidArgument {
			t.Errorf("RemoveImage, %s: want InvalidArgument, got %v", name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("bad input made %d requests to the registry", n)
	}
	// The same pull with good input works.
	if _, err := d.is.PullImage(bg, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
}
