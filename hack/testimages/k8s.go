package main

// The images the Kubernetes v1.37 node e2e [NodeConformance] specs run
// (k8s.io/kubernetes test/utils/image/manifest.go), as stand-ins built
// here: docs/conformance.md says which image serves which specs.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

const agnhostPkg = "github.com/shim-cri/shim/hack/testimages/agnhost"

// buildAgnhost compiles the agnhost stand-in (./agnhost) static and
// stripped, without build ids or paths of this machine. It must run inside
// this module (go run ./hack/testimages from the repository, or its tests).
func buildAgnhost(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "shim-testimages-go-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "agnhost")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", out, agnhostPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w: %s", agnhostPkg, err, bytes.TrimSpace(b))
	}
	return os.ReadFile(out)
}

// netcatPackage provides nc with UDP (-u), which busybox's nc lacks; the
// specs run "nc -u" from agnhost containers as agnhost's image (Alpine's
// netcat-openbsd) allows.
const netcatPackage = "netcat-openbsd"

// Image configs of the node e2e images.
var (
	// agnhost: ENTRYPOINT ["/agnhost"], CMD ["pause"], the ports its
	// servers use.
	agnhostConfig = v1.Config{
		Env:        []string{pathEnv},
		Entrypoint: []string{"/agnhost"},
		Cmd:        []string{"pause"},
		ExposedPorts: map[string]struct{}{
			"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}, "5000/tcp": {},
		},
	}
	// test/images/nonroot: USER 1234.
	nonrootConfig = withUser(shellConfig, "1234")
)

// k8sImages are the node e2e images that are not also critest's.
func k8sImages() []imageDef {
	return []imageDef{
		{refs: []string{e2e + "busybox:1.37.0-2"}, layers: busyboxWith(ashShLayer), config: shellConfig},
		{refs: []string{e2e + "agnhost:2.66.1", e2e + "agnhost:2.55"}, layers: busyboxWith(agnhostLayer), config: agnhostConfig},
		{refs: []string{e2e + "nonroot:1.5"}, layers: busyboxWith(), config: nonrootConfig},
		{refs: []string{e2e + "ipc-utils:1.4"}, layers: busyboxWith(ipcUtilsLayer), config: shellConfig},
		// Debian with dnsutils upstream; the specs run `hostname -f`, which
		// Debian's busybox resolves through glibc's /etc/hosts lookup.
		{refs: []string{e2e + "glibc-dns-testing:2.1.1"}, layers: busyboxWith(), config: shellConfig},
	}
}

// agnhostUsers: agnhost's image adds user-defined-in-image (uid 1000) and
// group-defined-in-image (gid 50000) with that user in it.
const (
	agnhostPasswd = etcPasswd + "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"
	agnhostGroup  = etcGroup + "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"
)

// agnhostLayer: /agnhost (and /agnhost-2, for the entrypoint specs), bash,
// curl and nc (agnhost's image has them and the specs call them), /uploads
// for netexec, and the localhost certificate netexec serves HTTPS with.
var agnhostLayer = layerSpec{name: "agnhost", build: func(b *builder) (*tree, error) {
	t := newTree()
	crt, key, err := localhostCert()
	if err != nil {
		return nil, err
	}
	return t, firstErr(
		t.File("agnhost", 0o755, b.in.agnhost),
		t.Symlink("agnhost-2", "agnhost"),
		t.addProgram("bin/bash", b.in.bash, 0o755),
		t.addProgram("usr/bin/curl", b.in.curl, 0o755),
		t.addProgram("usr/bin/nc", b.in.nc, 0o755),
		t.Dir("uploads", 0o755, 0, 0),
		t.Dir("home/user-defined-in-image", 0o755, 1000, 1000),
		t.File("etc/passwd", 0o644, []byte(agnhostPasswd)),
		t.File("etc/group", 0o644, []byte(agnhostGroup)),
		t.File("localhost.crt", 0o644, crt),
		t.File("localhost.key", 0o600, key),
	)
}}

// ashShLayer makes upstream busybox 1.37's ash the /bin/sh of the node e2e
// suite's busybox (Debian's ash stays as /bin/ash): see ash.go for why.
var ashShLayer = layerSpec{name: "ash 1.37 as /bin/sh", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, t.addProgram("bin/sh", b.in.ash, 0o755)
}}

// ipcUtilsLayer: util-linux's ipcmk next to the ipcs every busybox image has.
var ipcUtilsLayer = layerSpec{name: "ipc-utils", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, t.addProgram("usr/bin/ipcmk", b.in.ipcmk, 0o755)
}}

// localhostCert is a self-signed certificate for localhost and 127.0.0.1
// and its key, derived from a fixed seed (Ed25519 keys and signatures are
// deterministic) so the image stays byte-reproducible. A test certificate:
// its key is public.
func localhostCert() (crt, key []byte, err error) {
	seed := sha256.Sum256([]byte("shim hack/testimages agnhost localhost.crt"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"shim test images"}},
		NotBefore:             epoch,
		NotAfter:              epoch.AddDate(100, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, nil, fmt.Errorf("localhost certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("localhost key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

// checkK8sInputs: what the node e2e layers need is there.
func (in inputs) checkK8s() error {
	if len(in.agnhost) == 0 {
		return fmt.Errorf("agnhost stand-in not built: %w", errdefs.ErrNotFound)
	}
	for _, p := range []string{in.bash, in.curl, in.nc, in.ipcmk, in.ash} {
		if p == "" {
			return fmt.Errorf("a host program for the node e2e images is not set: %w", errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
