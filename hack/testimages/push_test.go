package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestTarget(t *testing.T) {
	for _, tc := range []struct{ ref, want string }{
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "127.0.0.1:5000/e2e-test-images/busybox:1.29-2"},
		{"registry.k8s.io/pause:3.9", "127.0.0.1:5000/pause:3.9"},
		{"k8s.gcr.io/pause:3.9", "127.0.0.1:5000/pause:3.9"},
		{"gcr.io/k8s-staging-cri-tools/test-image-latest", "127.0.0.1:5000/k8s-staging-cri-tools/test-image-latest:latest"},
		{"docker.io/library/busybox", "127.0.0.1:5000/library/busybox:latest"},
		{"docker.io/library/busybox:1.36", "127.0.0.1:5000/library/busybox:1.36"},
		{"public.ecr.aws/docker/library/busybox:1-musl", "127.0.0.1:5000/docker/library/busybox:1-musl"},
		{"shim-test/zstd:1", "127.0.0.1:5000/shim-test/zstd:1"},
	} {
		got, err := target("127.0.0.1:5000", tc.ref)
		if err != nil {
			t.Errorf("%s: %v", tc.ref, err)
			continue
		}
		if got.String() != tc.want {
			t.Errorf("%s -> %s, want %s", tc.ref, got, tc.want)
		}
	}
	digestRef := "gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"
	if _, err := target("127.0.0.1:5000", digestRef); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("digest reference: got %v, want ErrInvalidArgument", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRegistry runs hack/registry.sh on a free port with its own state dir
// and stops it when the test ends.
func startRegistry(t *testing.T) (addr string, script func(args ...string) (string, error)) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/docker-registry"); err != nil {
		t.Skip("needs Debian's docker-registry")
	}
	state := t.TempDir()
	port := strconv.Itoa(freePort(t))
	script = func(args ...string) (string, error) {
		cmd := exec.Command("../registry.sh", append(args, port)...)
		cmd.Env = append(os.Environ(), "SHIM_REGISTRY_DIR="+state)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := script("start"); err != nil {
		t.Fatalf("registry.sh start: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := script("stop"); err != nil {
			t.Errorf("registry.sh stop: %v\n%s", err, out)
		}
	})
	return "127.0.0.1:" + port, script
}

func TestRegistryScript(t *testing.T) {
	addr, script := startRegistry(t)
	out, err := script("start")
	if err != nil || !strings.Contains(out, "already running") {
		t.Fatalf("second start: %v\n%s", err, out)
	}
	resp, err := http.Get("http://" + addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/v2/ answered %s", resp.Status)
	}
	if out, err := script("stop"); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if out, err := script("status"); err == nil {
		t.Fatalf("status after stop succeeded:\n%s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections after stop", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Stopping a stopped registry is fine too (the cleanup does it again).
	if out, err := script("stop"); err != nil || !strings.Contains(out, "not running") {
		t.Fatalf("second stop: %v\n%s", err, out)
	}
}

// get fetches a path of the registry the way a hosts.toml mirror does.
func get(t *testing.T, url, accept string) ([]byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, resp.Header
}

func TestPushIdempotent(t *testing.T) {
	all, _ := buildAll(t)
	addr, _ := startRegistry(t)
	ctx := context.Background()

	pushAll := func() map[string]pushResult {
		res := map[string]pushResult{}
		for _, def := range images() {
			rs, err := push(ctx, addr, all[def.refs[0]])
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				res[r.ref] = r
			}
		}
		return res
	}
	first := pushAll()
	second := pushAll()
	for ref, r := range first {
		want := mustDigest(t, all[ref])
		if r.digest != want || second[ref].digest != want {
			t.Errorf("%s: pushed %s then %s, built %s", ref, r.digest, second[ref].digest, want)
		}
		if second[ref].changed {
			t.Errorf("%s: second push changed the tag", ref)
		}
	}
	if !first["registry.k8s.io/pause:3.9"].changed || first["k8s.gcr.io/pause:3.9"].changed {
		t.Errorf("pause: first push changed %v, same repository again changed %v; want true, false",
			first["registry.k8s.io/pause:3.9"].changed, first["k8s.gcr.io/pause:3.9"].changed)
	}

	// Read back through the paths containerd's mirror asks for.
	const accept = "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.v2+json"
	for _, tc := range []struct{ ref, path string }{
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "/v2/e2e-test-images/busybox/manifests/1.29-2"},
		{"gcr.io/k8s-staging-cri-tools/test-image-latest", "/v2/k8s-staging-cri-tools/test-image-latest/manifests/latest"},
		{"docker.io/library/busybox:latest", "/v2/library/busybox/manifests/latest"},
		{"shim-test/multiarch:1", "/v2/shim-test/multiarch/manifests/1"},
		{"shim-test/docker-schema2:1", "/v2/shim-test/docker-schema2/manifests/1"},
	} {
		body, hdr := get(t, "http://"+addr+tc.path, accept)
		want := mustDigest(t, all[tc.ref]).String()
		if got := hdr.Get("Docker-Content-Digest"); got != want || sha(body) != want {
			t.Errorf("%s: registry digest %s, body %s, want %s", tc.path, got, sha(body), want)
		}
	}
	l := imageLayers(t, all["registry.k8s.io/e2e-test-images/nonewprivs:1.3"].image)[1]
	d, _ := l.Digest()
	blob, _ := get(t, fmt.Sprintf("http://%s/v2/e2e-test-images/nonewprivs/blobs/%s", addr, d), "")
	sum := sha256.Sum256(blob)
	if "sha256:"+hex.EncodeToString(sum[:]) != d.String() {
		t.Errorf("blob %s came back with digest sha256:%x", d, sum)
	}
}
