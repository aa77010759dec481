package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

var (
	buildOnce sync.Once
	builtShim string
	buildErr  error
	// raceBuild: this test binary has the race detector (race_test.go),
	// and so does the daemon it builds.
	raceBuild bool
)

// buildShim builds bin/shim the way `make build` does (with the embedded
// lean runtime), once per test binary; with -race when the tests run
// with it (the lean runtime, the monitor and container init, stays
// without: it is mostly C and single-threaded).
func buildShim(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shim-daemon-test")
		if err != nil {
			buildErr = err
			return
		}
		// cmd/shim/shim-runtime.bin, built by the Makefile's own
		// target: the static link flags are defined there only.
		if out, err := exec.Command("make", "-s", "-C", filepath.Join("..", ".."), "runtime").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("make runtime: %v\n%s", err, out)
			return
		}
		if buildErr = checkStatic(filepath.Join("..", "..", "cmd", "shim", "shim-runtime.bin")); buildErr != nil {
			return
		}
		shim := []string{"build", "-tags", "shim_embed", "-o", filepath.Join(dir, "shim"), "../../cmd/shim"}
		if raceBuild {
			shim = append(shim[:1], append([]string{"-race"}, shim[1:]...)...)
		}
		if out, err := exec.Command("go", shim...).CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %v: %v\n%s", shim, err, out)
			return
		}
		builtShim = filepath.Join(dir, "shim")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtShim
}

// checkStatic fails when the lean runtime has an ELF interpreter: it is
// linked statically, or each of its starts pays for ld.so (make runtime).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (it has a PT_INTERP header): make runtime links it statically", path)
		}
	}
	return nil
}

// testEnv is a daemon's directories and config, reusable across restarts.
type testEnv struct {
	t      *testing.T
	bin    string
	base   string
	root   string
	state  string
	regDir string
	config string
	logs   string
}

func newTestEnv(t *testing.T, extraConfig string) *testEnv {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	base := t.TempDir()
	// The root of a container in a user namespace reaches its rootfs
	// under the state dir like any other process (t.TempDir is 0700).
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	e := &testEnv{t: t, bin: buildShim(t), base: base, root: filepath.Join(base, "root"), state: filepath.Join(base, "state"),
		regDir: filepath.Join(base, "certs.d"), config: filepath.Join(base, "config.toml"), logs: filepath.Join(base, "logs")}
	os.MkdirAll(e.regDir, 0o755)
	os.MkdirAll(e.logs, 0o755)
	if err := os.WriteFile(e.config, []byte(extraConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(filepath.Join(e.state, "ns"), syscall.MNT_DETACH) })
	// Registered before any daemon starts: runs after they are killed.
	t.Cleanup(func() { removeTestNetwork(t, extraConfig) })
	return e
}

// removeTestNetwork deletes the bridge and the nftables table a test's
// config gives the bridge driver (bridgeConfig), so the next run starts
// from the same host. The host's own (shim0, table shim) are never
// touched.
func removeTestNetwork(t *testing.T, extraConfig string) {
	var c config.Config
	if _, err := toml.Decode(extraConfig, &c); err != nil {
		t.Errorf("test config: %v", err)
		return
	}
	def := config.Default().Network
	n := c.Network
	if n.Driver != "bridge" || n.Bridge == "" || n.Bridge == def.Bridge || n.NFTTable == "" || n.NFTTable == def.NFTTable {
		return
	}
	if l, err := netlink.LinkByName(n.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("delete test bridge %s: %v", n.Bridge, err)
		}
	}
	nft, err := nftables.New()
	if err != nil {
		t.Errorf("nftables: %v", err)
		return
	}
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Errorf("nftables: %v", err)
		return
	}
	for _, tb := range tables {
		if tb.Name == n.NFTTable {
			nft.DelTable(tb)
			if err := nft.Flush(); err != nil {
				t.Errorf("delete test nftables table %s: %v", n.NFTTable, err)
			}
		}
	}
}

// bridgeConfig is a network config of its own for a test: its own bridge,
// CIDR, nftables table and veth prefix, so tests never touch the host's
// shim0 or each other's.
func bridgeConfig(bridge, cidr string) string {
	return fmt.Sprintf("[network]\ndriver = \"bridge\"\nbridge = %q\npod_cidr = %q\nnft_table = %q\nveth_prefix = %q\n",
		bridge, cidr, bridge, "t"+bridge[len(bridge)-1:])
}

type daemonProc struct {
	cmd  *exec.Cmd
	sock string
	log  *os.File
	conn *grpc.ClientConn
	rs   runtimeapi.RuntimeServiceClient
	is   runtimeapi.ImageServiceClient
}

func (e *testEnv) start() *daemonProc {
	t := e.t
	t.Helper()
	sock := filepath.Join(e.state, "shim.sock")
	logf, err := os.OpenFile(filepath.Join(e.base, "shim.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.bin, "serve", "--config", e.config, "--root", e.root, "--state", e.state,
		"--listen", "unix://"+sock, "--registry-config", e.regDir, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			d := &daemonProc{cmd: cmd, sock: sock, log: logf, conn: conn,
				rs: runtimeapi.NewRuntimeServiceClient(conn), is: runtimeapi.NewImageServiceClient(conn)}
			t.Cleanup(func() {
				d.kill9()
				if raceBuild {
					checkNoRace(t, logf.Name())
				}
			})
			return d
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	cmd.Process.Kill()
	b, _ := os.ReadFile(logf.Name())
	t.Fatalf("daemon did not start:\n%s", b)
	return nil
}

// checkNoRace fails the test when the race detector reported a race in
// the daemon's log.
func checkNoRace(t *testing.T, logPath string) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Errorf("daemon log: %v", err)
		return
	}
	if i := bytes.Index(b, []byte("WARNING: DATA RACE")); i >= 0 {
		end := min(len(b), i+8<<10)
		t.Errorf("the daemon reported a data race:\n%s", b[i:end])
	}
}

func (d *daemonProc) kill9() {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	d.log.Close()
	if d.conn != nil {
		d.conn.Close()
	}
}

// stop ends the daemon with SIGTERM.
func (d *daemonProc) stop(t *testing.T) {
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
	d.log.Close()
	d.conn.Close()
}

// testRegistry serves test images on loopback.
type testRegistry struct {
	host string
}

func newRegistry(t *testing.T) *testRegistry {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return &testRegistry{host: strings.TrimPrefix(srv.URL, "http://")}
}

func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return r.host + "/" + repoTag
}

var (
	bbOnce  sync.Once
	bbLayer v1.Layer
	bbErr   error
)

// busyboxImage is an image of busybox (applets as hard links) with cmd.
func busyboxImage(t *testing.T, entrypoint, cmd []string) v1.Image {
	t.Helper()
	if !testbundle.Available() {
		t.Skip("needs busybox-static")
	}
	bbOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bbimg")
		if err != nil {
			bbErr = err
			return
		}
		defer os.RemoveAll(dir)
		if bbErr = testbundle.Rootfs(dir); bbErr != nil {
			return
		}
		var buf bytes.Buffer
		if bbErr = tarDir(dir, &buf); bbErr != nil {
			return
		}
		data := buf.Bytes()
		bbLayer, bbErr = tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
			tarball.WithMediaType(types.OCILayer))
	})
	if bbErr != nil {
		t.Fatal(bbErr)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, bbLayer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint, cf.Config.Cmd = entrypoint, cmd
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// tarDir writes dir as a tar stream, hard links as links.
func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = rel
		hdr.Uname, hdr.Gname = "", ""
		st := info.Sys().(*syscall.Stat_t)
		if info.Mode().IsRegular() {
			if first, ok := inodes[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				return tw.WriteHeader(hdr)
			}
			inodes[st.Ino] = rel
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

var bg = context.Background()

// pull pulls ref through the daemon.
func (d *daemonProc) pull(t *testing.T, ref string) {
	t.Helper()
	if _, err := d.is.PullImage(bg, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
}

// podConfig is a pod with its own pid namespace per container.
func podConfig(name, logDir string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "test", Uid: name + "-uid"},
		Hostname:     name,
		LogDirectory: filepath.Join(logDir, name),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

func ctrConfig(name, image string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  cmd,
		LogPath:  name + ".log",
	}
}

func (d *daemonProc) runPod(t *testing.T, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	r, err := d.rs.RunPodSandbox(bg, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("run pod %s: %v", cfg.Metadata.Name, err)
	}
	return r.PodSandboxId
}

func (d *daemonProc) create(t *testing.T, pod string, pcfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	r, err := d.rs.CreateContainer(bg, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: pcfg})
	if err != nil {
		t.Fatalf("create %s: %v", cfg.Metadata.Name, err)
	}
	return r.ContainerId
}

func (d *daemonProc) startCtr(t *testing.T, id string) {
	t.Helper()
	if _, err := d.rs.StartContainer(bg, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
}

func (d *daemonProc) status(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	r, err := d.rs.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("status %s: %v", id, err)
	}
	return r.Status
}

func (d *daemonProc) podStatus(t *testing.T, id string) *runtimeapi.PodSandboxStatus {
	t.Helper()
	r, err := d.rs.PodSandboxStatus(bg, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatalf("pod status %s: %v", id, err)
	}
	return r.Status
}

// waitState waits until the container reaches state.
func (d *daemonProc) waitState(t *testing.T, id string, state runtimeapi.ContainerState) *runtimeapi.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := d.status(t, id)
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %v, want %v", id, st.State, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeAllPods stops and removes every pod.
func (d *daemonProc) removeAllPods(t *testing.T) {
	t.Helper()
	l, err := d.rs.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Items {
		if _, err := d.rs.RemovePodSandbox(bg, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Errorf("remove pod %s: %v", p.Id, err)
		}
	}
}

// admin is an HTTP client of the daemon's admin socket.
func (e *testEnv) admin() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(e.state, AdminSocket))
		}}}
}
