package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/internal/capread"
)

// Pod files, bind-mounted into every container of the pod (writable unless
// the container's root is read-only, as containerd does: some programs
// write /etc/hosts). They live on a tmpfs of their own, podFilesDir in the
// pod's directory, so that a container cannot grow them beyond its size and
// fill the state filesystem.
const (
	podFilesDir = "files"
	podHostname = "hostname"
	podHosts    = "hosts"
	podResolv   = "resolv.conf"
)

// podFilesSlack is what the pod files' tmpfs holds beyond their first
// content: room for programs that add a few lines, and the bound on what a
// container can write there.
const podFilesSlack = 1 << 20

// maxHostFile caps what is read of the host's /etc/hosts and resolv.conf.
const maxHostFile = 1 << 20

// podFiles renders the pod's /etc/hostname, /etc/hosts and /etc/resolv.conf
// from its config. The DNS config was validated (specgen.ValidatePodConfig):
// values are written as kubelet sent them.
func podFiles(hostname string, hostNet bool, dns *runtimeapi.DNSConfig) (map[string][]byte, error) {
	var hosts []byte
	if hostNet {
		b, err := capread.File("/etc/hosts", maxHostFile)
		if err != nil {
			return nil, err
		}
		hosts = b
	} else {
		hosts = []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	}
	resolv, err := resolvConf(dns)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{podHostname: []byte(hostname + "\n"), podHosts: hosts, podResolv: resolv}, nil
}

// mountPodFiles mounts the pod files' tmpfs in the pod directory dir and
// writes files into it. It returns the tmpfs directory; on error nothing
// stays mounted.
func mountPodFiles(dir string, files map[string][]byte) (_ string, retErr error) {
	size := podFilesSlack
	for _, b := range files {
		size += (len(b) + 4095) &^ 4095
	}
	mnt := filepath.Join(dir, podFilesDir)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount("podfiles", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		fmt.Sprintf("mode=0755,size=%d,nr_inodes=%d", size, len(files)+8)); err != nil {
		return "", fmt.Errorf("mounting the pod files' tmpfs: %w", err)
	}
	defer func() {
		if retErr != nil {
			unmount(mnt)
		}
	}()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(mnt, name), b, 0o644); err != nil {
			return "", err
		}
	}
	return mnt, nil
}

// resolvConf renders the pod's DNS config, or copies the host's file when
// the config sets nothing.
func resolvConf(dns *runtimeapi.DNSConfig) ([]byte, error) {
	if len(dns.GetServers()) == 0 && len(dns.GetSearches()) == 0 && len(dns.GetOptions()) == 0 {
		b, err := capread.File("/etc/resolv.conf", maxHostFile)
		if os.IsNotExist(err) {
			return nil, nil
		}
		return b, err
	}
	var buf bytes.Buffer
	if len(dns.GetSearches()) > 0 {
		fmt.Fprintf(&buf, "search %s\n", strings.Join(dns.GetSearches(), " "))
	}
	for _, s := range dns.GetServers() {
		fmt.Fprintf(&buf, "nameserver %s\n", s)
	}
	if len(dns.GetOptions()) > 0 {
		fmt.Fprintf(&buf, "options %s\n", strings.Join(dns.GetOptions(), " "))
	}
	return buf.Bytes(), nil
}
