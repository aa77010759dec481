package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestResolvConfKubelet renders the DNS configs kubelet 1.37 sends (see
// specgen's TestKubeletPodConfigs) as kubelet's own resolv.conf reader
// (network/dns parseResolvConf) would read them back: one line per keyword,
// values as sent.
func TestResolvConfKubelet(t *testing.T) {
	for _, tc := range []struct {
		name string
		dns  *runtimeapi.DNSConfig
		want string
	}{
		{"resolvConf \"\"", &runtimeapi.DNSConfig{Servers: []string{"127.0.0.1"}, Searches: []string{"."}},
			"search .\nnameserver 127.0.0.1\n"},
		{"ClusterFirst", &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"},
			Searches: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Options: []string{"ndots:5", "edns0", "trust-ad"}},
			"search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5 edns0 trust-ad\n"},
		{"host names and a zone", &runtimeapi.DNSConfig{Servers: []string{"fe80::1%eth0", "dns.corp.example"}, Searches: []string{"my_domain.local", "example.com."}},
			"search my_domain.local example.com.\nnameserver fe80::1%eth0\nnameserver dns.corp.example\n"},
		{"options in any form", &runtimeapi.DNSConfig{Servers: []string{"1.1.1.1"}, Options: []string{"timeout:", "a:b:c", "#x;y"}},
			"nameserver 1.1.1.1\noptions timeout: a:b:c #x;y\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolvConf(tc.dns)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	// No config: the host's file.
	host, _ := os.ReadFile("/etc/resolv.conf")
	if got, err := resolvConf(&runtimeapi.DNSConfig{}); err != nil || string(got) != string(host) {
		t.Errorf("empty config: %q %v, want the host's %q", got, err, host)
	}
}

// TestPodFilesBounded: the pod files live on a tmpfs of their own, which a
// container writing them cannot grow beyond its size.
func TestPodFilesBounded(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (mounts a tmpfs)")
	}
	dir := t.TempDir()
	files, err := podFiles("web-0", false, &runtimeapi.DNSConfig{Servers: []string{"127.0.0.1"}, Searches: []string{"."}})
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := mountPodFiles(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	defer unmount(mnt)
	for name, want := range map[string]string{podHostname: "web-0\n", podResolv: "search .\nnameserver 127.0.0.1\n"} {
		if b, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", name, b, err, want)
		}
	}
	// A program may add a few lines.
	f, err := os.OpenFile(filepath.Join(mnt, podHosts), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("10.0.0.5\tdb\n"); err != nil {
		t.Fatalf("appending a line: %v", err)
	}
	// Filling it stops at the tmpfs' size.
	chunk := []byte(strings.Repeat("x", 64<<10))
	written := 0
	for written < 64<<20 {
		n, err := f.Write(chunk)
		written += n
		if err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("after %d bytes: %v, want ENOSPC", written, err)
			}
			break
		}
	}
	if written > 2*podFilesSlack {
		t.Fatalf("a container could write %d bytes into /etc/hosts", written)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("pod files are not on their own tmpfs: %v", err)
	}
	if err := unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mnt); err != nil {
		t.Fatalf("the tmpfs left its mount point busy: %v", err)
	}
}
