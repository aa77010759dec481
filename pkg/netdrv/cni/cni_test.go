package cni

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/netdrv/testsuite"
)

// Debian's containernetworking-plugins install here.
const debianBinDir = "/usr/lib/cni"

func netName(cfg testsuite.Config) string { return "shimtest-" + cfg.Bridge }

// writeConflist writes the test network: Debian's bridge, host-local and
// portmap plugins on the subtest's bridge and CIDR. No ipMasq: the suite's
// traffic never leaves the host.
func writeConflist(t *testing.T, cfg testsuite.Config) string {
	t.Helper()
	dir := filepath.Join(cfg.Dir, "net.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gw := strings.TrimSuffix(strings.SplitN(cfg.CIDR, "/", 2)[0], ".0") + ".1"
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "gateway": %q}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}`, netName(cfg), cfg.Bridge, filepath.Join(cfg.Dir, "ipam"), cfg.CIDR, gw)
	if err := os.WriteFile(filepath.Join(dir, "10-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func needPlugins(t *testing.T) {
	t.Helper()
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(debianBinDir, p)); err != nil {
			t.Skipf("needs the CNI %s plugin in %s (Debian containernetworking-plugins)", p, debianBinDir)
		}
	}
}

func TestSuite(t *testing.T) {
	needPlugins(t)
	testsuite.Run(t, testsuite.Harness{
		New: func(t *testing.T, cfg testsuite.Config) netdrv.Driver {
			d, err := New(context.Background(), Config{
				ConfDir:  writeConflist(t, cfg),
				BinDirs:  []string{debianBinDir},
				CacheDir: filepath.Join(cfg.Dir, "cache"),
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Ready(context.Background()); err != nil {
				t.Fatal(err)
			}
			return d
		},
		Destroy: func(t *testing.T, cfg testsuite.Config) {
			if l, err := netlink.LinkByName(cfg.Bridge); err == nil {
				if err := netlink.LinkDel(l); err != nil {
					t.Errorf("delete bridge %s: %v", cfg.Bridge, err)
				}
			}
		},
		Residue:      residue,
		BridgePrefix: "shtcni",
		Net:          "10.214",
		PortBase:     25000,
	})
}

// residue lists host-local reservations, libcni cache entries and the
// iptables rules portmap made for the subtest's network.
func residue(t *testing.T, cfg testsuite.Config) []string {
	var out []string
	ipam := filepath.Join(cfg.Dir, "ipam", netName(cfg))
	ents, err := os.ReadDir(ipam)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip") {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(ipam, e.Name()))
		out = append(out, fmt.Sprintf("host-local %s = %q", e.Name(), b))
	}
	cache, err := os.ReadDir(filepath.Join(cfg.Dir, "cache", "results"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range cache {
		out = append(out, "libcni cache "+e.Name())
	}
	save, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, save)
	}
	mark := fmt.Sprintf(`name: \"%s\"`, netName(cfg))
	for _, l := range strings.Split(string(save), "\n") {
		if strings.Contains(l, mark) {
			out = append(out, "iptables "+l)
		}
	}
	return out
}

// ---- config handling, no root needed ----

func TestReadyExplainsMissingConfig(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "net.d")
	d, err := New(context.Background(), Config{ConfDir: confDir, BinDirs: []string{debianBinDir}, CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Ready(context.Background())
	if !errdefs.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), confDir) {
		t.Fatalf("Ready with no config dir: %v, want unavailable naming %s", err, confDir)
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// An unparsable file is skipped in favour of the next one by name; a
	// plugin that is not installed makes Ready fail and name it.
	os.WriteFile(filepath.Join(confDir, "00-broken.conflist"), []byte("{not json"), 0o644)
	os.WriteFile(filepath.Join(confDir, "10-net.conflist"), []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"no-such-plugin"}]}`), 0o644)
	err = d.Ready(context.Background())
	if !errdefs.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Fatalf("Ready with a missing plugin: %v, want it named", err)
	}
	if _, err := os.Stat(filepath.Join(debianBinDir, "bridge")); err != nil {
		t.Skip("needs Debian's CNI plugins for the rest")
	}
	// A config appearing (or changing) after start is picked up.
	os.WriteFile(filepath.Join(confDir, "10-net.conflist"), []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}`), 0o644)
	if err := d.Ready(context.Background()); err != nil {
		t.Fatalf("Ready after the config was fixed: %v", err)
	}
	list, err := d.load()
	if err != nil || list.Name != "n" || len(list.Plugins) != 2 {
		t.Fatalf("load = %+v, %v", list, err)
	}
}

func TestSinglePluginConf(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "05-single.conf"), []byte(`{"cniVersion":"0.4.0","name":"single","type":"bridge","bridge":"x"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "10-later.conflist"), []byte(`{"cniVersion":"1.0.0","name":"later","plugins":[{"type":"bridge"}]}`), 0o644)
	d, err := New(context.Background(), Config{ConfDir: dir, CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	list, err := d.load()
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "single" || list.CNIVersion != "0.4.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "bridge" {
		t.Fatalf("single-plugin .conf loaded as %+v", list)
	}
}

func TestRuntimeConf(t *testing.T) {
	d, err := New(context.Background(), Config{ConfDir: t.TempDir(), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pod := netdrv.Pod{ID: "abc", Name: "web", Namespace: "default", UID: "1234", NetNS: "/x", Annotations: map[string]string{"a": "b"}}
	ports, _ := netdrv.HostPorts([]netdrv.PortMapping{{Protocol: "UDP", ContainerPort: 53, HostPort: 5353, HostIP: "0.0.0.0"}})
	rt, err := d.runtimeConf(pod, ports, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web"},
		{"K8S_POD_INFRA_CONTAINER_ID", "abc"}, {"K8S_POD_UID", "1234"}}
	if fmt.Sprint(rt.Args) != fmt.Sprint(want) {
		t.Fatalf("CNI_ARGS %v, want %v", rt.Args, want)
	}
	pm := fmt.Sprintf("%+v", rt.CapabilityArgs["portMappings"])
	if pm != "[{HostPort:5353 ContainerPort:53 Protocol:udp HostIP:}]" {
		t.Fatalf("portMappings %s", pm)
	}
	pod.Name = "web;K8S_POD_NAME=evil"
	if _, err := d.runtimeConf(pod, nil, "eth0"); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("a pod name with ';' in CNI_ARGS: %v, want invalid argument", err)
	}
}
