// Package cni networks pods through the cluster's CNI plugins
// (github.com/containernetworking/cni/libcni), the way kubelet's CNI
// integration, containerd and CRI-O do.
//
// Configuration: the first file by name in Config.ConfDir (default
// /etc/cni/net.d) ending in .conflist, .conf or .json that parses; a
// .conf/.json holding one plugin is wrapped into a list. It is re-read when
// the file changes, so a CNI DaemonSet may install it after shim starts;
// until then Ready fails and says why. Plugins are looked up in
// Config.BinDirs (default /opt/cni/bin; Debian installs them in
// /usr/lib/cni).
//
// Per pod: ADD of the loopback plugin (a built-in one-plugin list named
// "cni-loopback", interface "lo"; when the plugin is not installed, lo is
// brought up with netlink instead), then ADD of the network list on
// Config.IfName (default eth0) with CNI_ARGS
// IgnoreUnknown=1;K8S_POD_NAMESPACE;K8S_POD_NAME;K8S_POD_INFRA_CONTAINER_ID;K8S_POD_UID
// as kubelet sets them and the capability args "portMappings" and
// "io.kubernetes.cri.pod-annotations". The pod's IPs are the result's
// addresses on interfaces inside the sandbox, IPv4 first.
//
// State: libcni's cache in Config.CacheDir (results/<network>-<pod id>-<ifname>,
// the config, CNI_ARGS, capability args and result of each ADD). Teardown
// runs DEL for every cached attachment of the pod with the cached config
// and arguments, so a changed conf dir does not break cleanup; with no
// cache it runs DEL with the current config (plugins treat DEL as
// idempotent). Everything else (addresses, iptables rules) is the plugins'.
package cni

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/nspin"
)

// Defaults for Config.
const (
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultBinDir   = "/opt/cni/bin"
	DefaultCacheDir = "/var/lib/shim/cni"
	DefaultIfName   = "eth0"

	loopbackNet = "cni-loopback"
)

// Config configures the CNI driver. Zero fields take the defaults.
type Config struct {
	ConfDir  string
	BinDirs  []string
	CacheDir string // libcni result cache; must survive daemon restarts
	IfName   string
}

// Driver is the CNI driver. It implements netdrv.Driver.
type Driver struct {
	cfg      Config
	cni      *libcni.CNIConfig
	loopback *libcni.NetworkConfigList

	mu     sync.Mutex
	cached struct {
		path string
		mod  time.Time
		size int64
		list *libcni.NetworkConfigList
	}
	rollbackBudget time.Duration
}

var _ netdrv.Driver = (*Driver)(nil)

// New returns the driver. A missing network config is not an error here:
// Ready reports it until one appears.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if len(cfg.BinDirs) == 0 {
		cfg.BinDirs = []string{DefaultBinDir}
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir
	}
	if cfg.IfName == "" {
		cfg.IfName = DefaultIfName
	}
	if len(cfg.IfName) >= 16 || strings.ContainsAny(cfg.IfName, "/ \x00") {
		return nil, fmt.Errorf("cni: interface name %q: %w", cfg.IfName, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("cni: cache dir: %w", err)
	}
	lo, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"` + loopbackNet + `","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		return nil, fmt.Errorf("cni: loopback config: %w", err)
	}
	d := &Driver{
		cfg: cfg,
		// An explicit exec: libcni creates its default lazily, racing
		// between concurrent pods.
		cni: libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, &invoke.DefaultExec{
			RawExec:       &invoke.RawExec{Stderr: os.Stderr},
			PluginDecoder: version.PluginDecoder{},
		}),
		loopback:       lo,
		rollbackBudget: time.Minute,
	}
	if _, err := d.load(); err != nil {
		log.G(ctx).WithError(err).Warn("cni: network not ready yet")
	}
	return d, nil
}

// Name implements netdrv.Driver.
func (d *Driver) Name() string { return "cni" }

// load returns the network list from the first usable file in ConfDir,
// parsing it again only when the file changed.
func (d *Driver) load() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(d.cfg.ConfDir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, fmt.Errorf("cni: read %s: %w: %w", d.cfg.ConfDir, err, errdefs.ErrUnavailable)
	}
	sort.Strings(files)
	var errs []error
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			continue
		}
		d.mu.Lock()
		c := d.cached
		d.mu.Unlock()
		if c.list != nil && c.path == f && c.mod.Equal(st.ModTime()) && c.size == st.Size() {
			return c.list, nil
		}
		list, err := parseConf(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.mu.Lock()
		d.cached.path, d.cached.mod, d.cached.size, d.cached.list = f, st.ModTime(), st.Size(), list
		d.mu.Unlock()
		return list, nil
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("cni: no usable network config in %s: %w: %w", d.cfg.ConfDir, errors.Join(errs...), errdefs.ErrUnavailable)
	}
	return nil, fmt.Errorf("cni: no network config found in %s (want a .conflist, .conf or .json file): %w", d.cfg.ConfDir, errdefs.ErrUnavailable)
}

// parseConf reads a network list, or a single plugin config as a list.
func parseConf(path string) (*libcni.NetworkConfigList, error) {
	if strings.HasSuffix(path, ".conflist") {
		list, err := libcni.NetworkConfFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return list, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	plugin, err := libcni.NetworkPluginConfFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if plugin.Network.Name == "" {
		return nil, fmt.Errorf("%s: network has no name", path)
	}
	list, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`,
		plugin.Network.CNIVersion, plugin.Network.Name, b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return list, nil
}

// Ready implements netdrv.Driver: a network config must exist and all its
// plugins must be installed.
func (d *Driver) Ready(ctx context.Context) error {
	list, err := d.load()
	if err != nil {
		return err
	}
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, d.cfg.BinDirs); err != nil {
			return fmt.Errorf("cni: network %q: plugin %q not found in %s: %w",
				list.Name, p.Network.Type, strings.Join(d.cfg.BinDirs, ":"), errdefs.ErrUnavailable)
		}
	}
	return nil
}

func (d *Driver) haveLoopback() bool {
	_, err := invoke.FindInPath("loopback", d.cfg.BinDirs)
	return err == nil
}

// runtimeConf is the RuntimeConf for the pod on interface ifName.
func (d *Driver) runtimeConf(pod netdrv.Pod, ports []netdrv.PortMapping, ifName string) (*libcni.RuntimeConf, error) {
	args := [][2]string{{"IgnoreUnknown", "1"}}
	for _, a := range [][2]string{
		{"K8S_POD_NAMESPACE", pod.Namespace},
		{"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", pod.ID},
		{"K8S_POD_UID", pod.UID},
	} {
		if strings.ContainsAny(a[1], ";=\x00\n") {
			return nil, fmt.Errorf("cni: %s %q: %w", a[0], a[1], errdefs.ErrInvalidArgument)
		}
		args = append(args, a)
	}
	type portMap struct {
		HostPort      int32  `json:"hostPort"`
		ContainerPort int32  `json:"containerPort"`
		Protocol      string `json:"protocol"`
		HostIP        string `json:"hostIP,omitempty"`
	}
	pms := make([]portMap, 0, len(ports))
	for _, pm := range ports {
		pms = append(pms, portMap{pm.HostPort, pm.ContainerPort, pm.Protocol, pm.HostIP})
	}
	caps := map[string]interface{}{"portMappings": pms}
	if len(pod.Annotations) > 0 {
		caps["io.kubernetes.cri.pod-annotations"] = pod.Annotations
	}
	return &libcni.RuntimeConf{
		ContainerID:    pod.ID,
		NetNS:          pod.NetNS,
		IfName:         ifName,
		Args:           args,
		CapabilityArgs: caps,
	}, nil
}

// Setup implements netdrv.Driver.
func (d *Driver) Setup(ctx context.Context, pod netdrv.Pod) (_ netdrv.Result, retErr error) {
	ports, err := pod.Validate()
	if err != nil {
		return netdrv.Result{}, err
	}
	ctx = log.WithFields(ctx, map[string]any{log.FieldPodID: pod.ID})
	if err := nspin.Check(nspin.Net, pod.NetNS); err != nil {
		return netdrv.Result{}, err
	}
	list, err := d.load()
	if err != nil {
		return netdrv.Result{}, err
	}
	rt, err := d.runtimeConf(pod, ports, d.cfg.IfName)
	if err != nil {
		return netdrv.Result{}, err
	}
	loRT := *rt
	loRT.IfName, loRT.CapabilityArgs = "lo", nil
	if err := ctx.Err(); err != nil {
		return netdrv.Result{}, err
	}
	// Set up before (a retry, or a crash mid-Setup): start over.
	if atts, err := d.cni.GetCachedAttachments(pod.ID); err == nil && len(atts) > 0 {
		if err := d.teardown(ctx, pod); err != nil {
			return netdrv.Result{}, err
		}
	}
	defer func() {
		if retErr == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.rollbackBudget)
		defer cancel()
		// DEL of the list even when its ADD failed: the plugins before the
		// failing one did their part and libcni does not undo it.
		if err := d.cni.DelNetworkList(rctx, list, rt); err != nil {
			log.G(ctx).WithError(err).Error("cni: rollback of failed setup")
		}
		if _, err := d.delCached(rctx, pod); err != nil {
			log.G(ctx).WithError(err).Error("cni: rollback of failed setup")
		}
	}()
	if d.haveLoopback() {
		if _, err := d.cni.AddNetworkList(ctx, d.loopback, &loRT); err != nil {
			return netdrv.Result{}, fmt.Errorf("cni: pod %s: loopback: %w: %w", pod.ID, err, errdefs.ErrUnavailable)
		}
	} else if err := loUp(pod.NetNS); err != nil {
		return netdrv.Result{}, fmt.Errorf("cni: pod %s: %w", pod.ID, err)
	}
	res, err := d.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		return netdrv.Result{}, fmt.Errorf("cni: pod %s: network %q: %w: %w", pod.ID, list.Name, err, errdefs.ErrUnavailable)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return netdrv.Result{}, fmt.Errorf("cni: pod %s: network %q: result: %w: %w", pod.ID, list.Name, err, errdefs.ErrInternal)
	}
	out := podResult(r, d.cfg.IfName)
	if len(out.IPs) == 0 {
		return netdrv.Result{}, fmt.Errorf("cni: pod %s: network %q gave the pod no address: %w", pod.ID, list.Name, errdefs.ErrUnavailable)
	}
	return out, nil
}

// podResult picks the addresses on interfaces inside the sandbox, IPv4
// first, and the gateway of the primary one.
func podResult(r *types100.Result, ifName string) netdrv.Result {
	var v4, v6 []*types100.IPConfig
	for _, ipc := range r.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		if ipc.Address.IP.To4() != nil {
			v4 = append(v4, ipc)
		} else {
			v6 = append(v6, ipc)
		}
	}
	out := netdrv.Result{Interface: ifName}
	for _, ipc := range append(v4, v6...) {
		out.IPs = append(out.IPs, ipc.Address.IP)
		if out.Gateway == nil && ipc.Gateway != nil {
			out.Gateway = ipc.Gateway
		}
	}
	return out
}

func loUp(netnsPath string) error {
	return nspin.Do(nspin.Net, netnsPath, func() error {
		if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}); err != nil {
			return fmt.Errorf("lo up: %w", err)
		}
		return nil
	})
}

// Teardown implements netdrv.Driver.
func (d *Driver) Teardown(ctx context.Context, pod netdrv.Pod) error {
	if err := netdrv.ValidateID(pod.ID); err != nil {
		return err
	}
	ctx = log.WithFields(ctx, map[string]any{log.FieldPodID: pod.ID})
	return d.teardown(ctx, pod)
}

// teardown runs DEL for every cached attachment of the pod, or for the
// current network when nothing is cached.
func (d *Driver) teardown(ctx context.Context, pod netdrv.Pod) error {
	n, err := d.delCached(ctx, pod)
	if err != nil || n > 0 {
		return err
	}
	list, err := d.load()
	if err != nil {
		return nil // no config and nothing cached: nothing of ours to undo
	}
	rt, err := d.runtimeConf(pod, nil, d.cfg.IfName)
	if err != nil {
		rt = &libcni.RuntimeConf{ContainerID: pod.ID, IfName: d.cfg.IfName}
	}
	rt.NetNS = liveNetNS(pod.NetNS)
	if err := d.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("cni: pod %s: network %q: delete: %w: %w", pod.ID, list.Name, err, errdefs.ErrUnavailable)
	}
	return nil
}

// liveNetNS is path if it still holds a network namespace, else "": DEL
// then cleans up what lives outside the namespace (IPAM, host rules).
func liveNetNS(path string) string {
	if path == "" || nspin.Check(nspin.Net, path) != nil {
		return ""
	}
	return path
}

// delCached runs DEL for every cached attachment of the pod with its cached
// config and arguments, the network first and loopback last. It returns
// how many attachments it found.
func (d *Driver) delCached(ctx context.Context, pod netdrv.Pod) (int, error) {
	atts, err := d.cni.GetCachedAttachments(pod.ID)
	if err != nil {
		return 0, fmt.Errorf("cni: pod %s: read cache: %w", pod.ID, err)
	}
	sort.SliceStable(atts, func(i, j int) bool { return atts[j].Network == loopbackNet && atts[i].Network != loopbackNet })
	netns := liveNetNS(pod.NetNS)
	var errs []error
	for _, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("cached config of network %q: %w", a.Network, err))
			continue
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    a.ContainerID,
			NetNS:          netns,
			IfName:         a.IfName,
			Args:           a.CniArgs,
			CapabilityArgs: a.CapabilityArgs,
		}
		if err := d.cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("network %q: delete: %w", a.Network, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return len(atts), fmt.Errorf("cni: pod %s: %w: %w", pod.ID, err, errdefs.ErrUnavailable)
	}
	return len(atts), nil
}

// SetPodCIDR implements netdrv.Driver: CNI plugins get their ranges from
// their own configuration, so this is a no-op.
func (d *Driver) SetPodCIDR(ctx context.Context, cidr string) error { return nil }

// Close implements netdrv.Driver.
func (d *Driver) Close() error { return nil }

// CacheFiles lists libcni's cached results (tests and diagnostics).
func (d *Driver) CacheFiles() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(d.cfg.CacheDir, "results"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, err
}
