package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
)

func testConfig(t *testing.T) *config.Config {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Root = filepath.Join(dir, "root")
	cfg.State = filepath.Join(dir, "state")
	cfg.Listen = "unix://" + filepath.Join(dir, "state", "shim.sock")
	cfg.Image.RegistryConfig = filepath.Join(dir, "certs.d")
	cfg.ShutdownGrace = config.Duration(2 * time.Second)
	cfg.Network.Driver = "none"
	return cfg
}

func TestDaemonImageService(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, _ := random.Image(1024, 2)
	ref, _ := name.ParseReference(host+"/d/img:1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()

	// A second daemon on the same root is refused.
	cfg2 := *cfg
	cfg2.Listen = "unix://" + filepath.Join(t.TempDir(), "other.sock")
	cfg2.State = t.TempDir()
	if _, err := New(context.Background(), &cfg2, Options{Version: "test"}); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second daemon on the same root: %v", err)
	}

	conn, err := grpc.NewClient(d.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	is := runtimeapi.NewImageServiceClient(conn)
	rs := runtimeapi.NewRuntimeServiceClient(conn)

	v, err := rs.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "shim" || v.RuntimeApiVersion != "v1" {
		t.Fatalf("version %v %v", v, err)
	}
	rc, err := rs.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
	if err != nil || rc.GetLinux().GetCgroupDriver() != runtimeapi.CgroupDriver_CGROUPFS {
		t.Fatalf("runtime config %v %v", rc, err)
	}
	st, err := rs.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil || len(st.GetStatus().GetConditions()) != 2 || !st.Status.Conditions[0].Status || st.Info["config"] == "" {
		t.Fatalf("status %v %v", st, err)
	}
	var lsm lsmStatus
	if err := json.Unmarshal([]byte(st.Info["lsm"]), &lsm); err != nil || lsm.LSMSupport != libct.HostLSM() {
		t.Fatalf("status lsm %q (%v), host %+v", st.Info["lsm"], err, libct.HostLSM())
	}
	if !lsm.AppArmor && lsm.AppArmorDefaultProfile != "" {
		t.Fatalf("a RuntimeDefault AppArmor profile %q without AppArmor", lsm.AppArmorDefaultProfile)
	}
	_, err = rs.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "CheckpointContainer") {
		t.Fatalf("unimplemented RPC: %v", err)
	}

	if _, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty image: %v", err)
	}
	if _, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "Bad Name"}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad name: %v", err)
	}
	pr, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: host + "/d/img:1"}})
	if err != nil {
		t.Fatal(err)
	}
	cfgName, _ := img.ConfigName()
	if pr.ImageRef != cfgName.String() {
		t.Errorf("image ref %s, want %s", pr.ImageRef, cfgName)
	}
	s, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: pr.ImageRef}, Verbose: true})
	if err != nil || s.Image == nil || s.Info["info"] == "" || s.Image.Size == 0 {
		t.Fatalf("status %v %v", s, err)
	}
	none, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "nothere:1"}})
	if err != nil || none.Image != nil {
		t.Fatalf("missing image status: %v %v", none, err)
	}
	l, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "nothere:1"}}})
	if err != nil || len(l.Images) != 0 {
		t.Fatalf("filtered list: %v %v", l, err)
	}
	l, err = is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil || len(l.Images) != 1 {
		t.Fatalf("list: %v %v", l, err)
	}
	fs, err := is.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || fs.ImageFilesystems[0].UsedBytes.Value == 0 || fs.ImageFilesystems[0].InodesUsed.Value == 0 {
		t.Fatalf("fs info: %v %v", fs, err)
	}
	if _, err := is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: host + "/d/img:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: host + "/d/img:1"}}); err != nil {
		t.Fatalf("removing a missing image: %v", err)
	}
	// Jobs were recorded.
	names := map[string]bool{}
	for _, j := range d.engine.Jobs() {
		names[j.Name] = true
	}
	for _, n := range []string{"pull", "image_status", "list_images", "remove_image", "fs_info"} {
		if !names[n] {
			t.Errorf("no %s job recorded", n)
		}
	}

	cancel()
	if err := <-served; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := os.Stat(strings.TrimPrefix(cfg.Listen, "unix://")); !os.IsNotExist(err) {
		t.Errorf("socket left after shutdown: %v", err)
	}
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

// TestMetricsPortServesOnlyMetrics: the TCP metrics listener has no
// authentication, so it serves /metrics and nothing else; /jobs (image
// and pod names, errors) is on the 0600 admin socket only.
func TestMetricsPortServesOnlyMetrics(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	cfg := testConfig(t)
	cfg.Metrics = freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	defer func() {
		cancel()
		<-served
	}()
	get := func(c *http.Client, url string) int {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	tcp := &http.Client{Timeout: 10 * time.Second}
	if code := get(tcp, "http://"+cfg.Metrics+"/metrics"); code != http.StatusOK {
		t.Errorf("metrics port /metrics: %d", code)
	}
	for _, p := range []string{"/jobs", "/jobs?name=pull", "/", "/debug/pprof/"} {
		if code := get(tcp, "http://"+cfg.Metrics+p); code != http.StatusNotFound {
			t.Errorf("metrics port %s: %d, want 404", p, code)
		}
	}
	admin := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(cfg.State, AdminSocket))
		}}}
	for _, p := range []string{"/jobs", "/metrics", "/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/block?seconds=1", "/debug/pprof/mutex?seconds=1"} {
		if code := get(admin, "http://admin"+p); code != http.StatusOK {
			t.Errorf("admin socket %s: %d", p, code)
		}
	}
	// Block and mutex profiles are sampled only while taken.
	for _, p := range []string{"/debug/pprof/block", "/debug/pprof/mutex?seconds=x"} {
		if code := get(admin, "http://admin"+p); code != http.StatusBadRequest {
			t.Errorf("admin socket %s: %d, want 400", p, code)
		}
	}
}
