package engine

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Pod files, bind-mounted into every container of the pod.
const (
	podHostname = "hostname"
	podHosts    = "hosts"
	podResolv   = "resolv.conf"
)

// maxHostFile caps what is read of the host's /etc/hosts and resolv.conf.
const maxHostFile = 1 << 20

// writePodFiles writes the pod's /etc/hostname, /etc/hosts and
// /etc/resolv.conf from its config.
func writePodFiles(dir, hostname string, hostNet bool, dns *runtimeapi.DNSConfig) error {
	if err := os.WriteFile(filepath.Join(dir, podHostname), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	var hosts []byte
	if hostNet {
		b, err := readCapped("/etc/hosts")
		if err != nil {
			return err
		}
		hosts = b
	} else {
		hosts = []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	}
	if err := os.WriteFile(filepath.Join(dir, podHosts), hosts, 0o644); err != nil {
		return err
	}
	resolv, err := resolvConf(dns)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, podResolv), resolv, 0o644)
}

// resolvConf renders the pod's DNS config, or copies the host's file when
// the config sets nothing.
func resolvConf(dns *runtimeapi.DNSConfig) ([]byte, error) {
	if len(dns.GetServers()) == 0 && len(dns.GetSearches()) == 0 && len(dns.GetOptions()) == 0 {
		b, err := readCapped("/etc/resolv.conf")
		if os.IsNotExist(err) {
			return nil, nil
		}
		return b, err
	}
	var buf bytes.Buffer
	for _, list := range [][]string{dns.GetServers(), dns.GetSearches(), dns.GetOptions()} {
		for _, v := range list {
			if v == "" || strings.ContainsAny(v, " \t\n\r\x00#;") {
				return nil, fmt.Errorf("DNS config value %q: %w", v, errdefs.ErrInvalidArgument)
			}
		}
	}
	if len(dns.GetSearches()) > 32 {
		return nil, fmt.Errorf("%d DNS searches: at most 32: %w", len(dns.GetSearches()), errdefs.ErrInvalidArgument)
	}
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

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxHostFile))
}
