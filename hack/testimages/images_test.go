package main

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// needTools skips when this machine cannot build the images at all (no C
// compiler, no Debian package tools). CI has them; a failure after this
// point is a real failure.
func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"gcc", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

func newTestBuilder(t *testing.T) *builder {
	t.Helper()
	needTools(t)
	ctx := context.Background()
	in, err := gatherInputs(ctx, "", defaultCacheDir(), "gcc", defaultHostPrograms)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBuilder(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	builtOnce sync.Once
	builtAll  map[string]built // by first reference
	builtErr  error
	builtBy   *builder
)

// buildAll builds every image once per test binary.
func buildAll(t *testing.T) (map[string]built, *builder) {
	t.Helper()
	needTools(t)
	builtOnce.Do(func() {
		builtBy = newTestBuilder(t)
		builtAll = map[string]built{}
		for _, def := range images() {
			img, err := builtBy.build(def)
			if err != nil {
				builtErr = err
				return
			}
			for _, ref := range def.refs {
				builtAll[ref] = img
			}
		}
	})
	if builtErr != nil {
		t.Fatal(builtErr)
	}
	return builtAll, builtBy
}

func mustDigest(t *testing.T, b built) v1.Hash {
	t.Helper()
	d, err := b.digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestImagesReproducible(t *testing.T) {
	first, _ := buildAll(t)
	// A second builder recompiles the C programs and rebuilds every layer.
	second := newTestBuilder(t)
	for _, def := range images() {
		img, err := second.build(def)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := mustDigest(t, img), mustDigest(t, first[def.refs[0]]); got != want {
			t.Errorf("%s: rebuild gave %s, first build %s", def.refs[0], got, want)
		}
	}
}

// TestImagesCritestNames checks that every name critest v1.37.0 pulls is
// built (test-image-digest excepted: its digest is pinned upstream).
func TestImagesCritestNames(t *testing.T) {
	names := map[string]bool{}
	for _, def := range images() {
		for _, r := range def.refs {
			if names[r] {
				t.Errorf("reference %s defined twice", r)
			}
			names[r] = true
		}
	}
	for _, r := range []string{
		"registry.k8s.io/e2e-test-images/busybox:1.29-2",
		"registry.k8s.io/e2e-test-images/nginx:1.14-2",
		"registry.k8s.io/e2e-test-images/httpd:2.4.39-4",
		"registry.k8s.io/e2e-test-images/nonewprivs:1.3",
		"registry.k8s.io/pause:3.9",
		"k8s.gcr.io/pause:3.9",
		"gcr.io/k8s-staging-cri-tools/test-image-latest",
		"gcr.io/k8s-staging-cri-tools/test-image-tag:test",
		"gcr.io/k8s-staging-cri-tools/test-image-tag:all",
		"gcr.io/k8s-staging-cri-tools/test-image-1:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-2:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-3:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-tags:1",
		"gcr.io/k8s-staging-cri-tools/test-image-tags:2",
		"gcr.io/k8s-staging-cri-tools/test-image-tags:3",
		"gcr.io/k8s-staging-cri-tools/test-image-user-uid",
		"gcr.io/k8s-staging-cri-tools/test-image-user-username",
		"gcr.io/k8s-staging-cri-tools/test-image-user-uid-group",
		"gcr.io/k8s-staging-cri-tools/test-image-user-username-group",
		"gcr.io/k8s-staging-cri-tools/test-image-predefined-group",
		"gcr.io/k8s-staging-cri-tools/hostnet-nginx-" + runtime.GOARCH,
		"public.ecr.aws/docker/library/busybox:1.35.0-glibc",
		"public.ecr.aws/docker/library/busybox:1-uclibc",
		"public.ecr.aws/docker/library/busybox:1",
		"public.ecr.aws/docker/library/busybox:1-glibc",
		"public.ecr.aws/docker/library/busybox:1-musl",
		"docker.io/library/busybox:latest",
		"docker.io/library/busybox:1.36",
	} {
		if !names[r] {
			t.Errorf("%s is not built", r)
		}
	}
}

func TestImagesDistinctAndShared(t *testing.T) {
	all, _ := buildAll(t)
	const p = "gcr.io/k8s-staging-cri-tools/"

	// Different tags, different images (critest lists them and expects one
	// repo tag per image id).
	seen := map[v1.Hash]string{}
	for _, r := range []string{p + "test-image-latest", p + "test-image-tag:test", p + "test-image-tag:all",
		p + "test-image-1:latest", p + "test-image-2:latest", p + "test-image-3:latest", p + "test-image-tags:1",
		p + "test-image-user-uid", p + "test-image-user-username", p + "test-image-user-uid-group",
		p + "test-image-user-username-group", p + "test-image-predefined-group",
		"registry.k8s.io/e2e-test-images/busybox:1.29-2"} {
		d := mustDigest(t, all[r])
		if other, dup := seen[d]; dup {
			t.Errorf("%s and %s are the same image %s", r, other, d)
		}
		seen[d] = r
	}
	// Same image under several names.
	for _, group := range [][]string{
		{p + "test-image-tags:1", p + "test-image-tags:2", p + "test-image-tags:3"},
		{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"},
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "docker.io/library/busybox:latest", "docker.io/library/busybox:1.36"},
	} {
		for _, r := range group[1:] {
			if mustDigest(t, all[r]) != mustDigest(t, all[group[0]]) {
				t.Errorf("%s and %s should be one image", r, group[0])
			}
		}
	}

	// Every busybox-based gzip image starts with the very same layer blob,
	// and the Docker schema2 image points at it too.
	base := firstLayerDigest(t, all["registry.k8s.io/e2e-test-images/busybox:1.29-2"].image)
	for _, r := range []string{"registry.k8s.io/e2e-test-images/nginx:1.14-2", "registry.k8s.io/e2e-test-images/httpd:2.4.39-4",
		"registry.k8s.io/e2e-test-images/nonewprivs:1.3", p + "test-image-1:latest", p + "test-image-predefined-group",
		p + "hostnet-nginx-" + hostPlatform().Architecture, "shim-test/docker-schema2:1"} {
		if got := firstLayerDigest(t, all[r].image); got != base {
			t.Errorf("%s: first layer %s, want the shared busybox layer %s", r, got, base)
		}
	}
}

func firstLayerDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) == 0 {
		t.Fatal("image has no layers")
	}
	return m.Layers[0].Digest
}

func TestImageConfigs(t *testing.T) {
	all, _ := buildAll(t)
	const p = "gcr.io/k8s-staging-cri-tools/"
	for _, tc := range []struct {
		ref        string
		user       string
		entrypoint []string
		cmd        []string
	}{
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "", nil, []string{"sh"}},
		{"registry.k8s.io/pause:3.9", "65535:65535", []string{"/pause"}, nil},
		{"registry.k8s.io/e2e-test-images/nginx:1.14-2", "", nil, []string{"nginx", "-g", "daemon off;"}},
		{"registry.k8s.io/e2e-test-images/httpd:2.4.39-4", "", nil, []string{"httpd-foreground"}},
		{"registry.k8s.io/e2e-test-images/nonewprivs:1.3", "", nil, []string{"nnp"}},
		{p + "test-image-user-uid", "1002", nil, []string{"sh"}},
		{p + "test-image-user-username", "www-data", nil, []string{"sh"}},
		{p + "test-image-user-uid-group", "1003:1003", nil, []string{"sh"}},
		{p + "test-image-user-username-group", "www-data:www-data", nil, []string{"sh"}},
		{p + "test-image-predefined-group", "1000", nil, []string{"sh"}},
	} {
		cf, err := all[tc.ref].image.ConfigFile()
		if err != nil {
			t.Fatalf("%s: %v", tc.ref, err)
		}
		c := cf.Config
		if c.User != tc.user || strings.Join(c.Entrypoint, " ") != strings.Join(tc.entrypoint, " ") ||
			strings.Join(c.Cmd, "\x00") != strings.Join(tc.cmd, "\x00") {
			t.Errorf("%s: user %q entrypoint %q cmd %q; want %q %q %q", tc.ref, c.User, c.Entrypoint, c.Cmd, tc.user, tc.entrypoint, tc.cmd)
		}
		if cf.OS != "linux" || cf.Architecture != hostPlatform().Architecture || !cf.Created.Time.Equal(epoch) {
			t.Errorf("%s: os %q arch %q created %v", tc.ref, cf.OS, cf.Architecture, cf.Created)
		}
	}
}

// layerFiles reads one layer's tar headers and the bodies of wanted files.
func layerFiles(t *testing.T, l v1.Layer, bodies ...string) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name] = h
		for _, want := range bodies {
			if h.Name == want {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				data[h.Name] = string(b)
			}
		}
	}
}

func imageLayers(t *testing.T, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func TestImageContents(t *testing.T) {
	all, _ := buildAll(t)
	bbLayers := imageLayers(t, all["registry.k8s.io/e2e-test-images/busybox:1.29-2"].image)
	if len(bbLayers) != 1 {
		t.Fatalf("busybox image has %d layers, want 1", len(bbLayers))
	}
	hdrs, data := layerFiles(t, bbLayers[0], "etc/passwd", "etc/group")

	// Applets are hard links, never symlinks (critest masks /bin/ls).
	for _, applet := range []string{"sh", "ls", "hostname", "nsenter", "top", "sleep", "cat", "echo", "wget", "nc", "pidof", "id", "touch", "ping", "netstat", "brctl", "grep", "mount", "seq", "httpd"} {
		h, ok := hdrs["bin/"+applet]
		if !ok {
			t.Errorf("busybox layer lacks bin/%s", applet)
			continue
		}
		if h.Typeflag != tar.TypeLink && h.Typeflag != tar.TypeReg {
			t.Errorf("bin/%s has tar type %c, want a hard link or the file itself", applet, h.Typeflag)
		}
	}
	for name, h := range hdrs {
		if strings.HasPrefix(name, "bin/") && h.Typeflag == tar.TypeSymlink {
			t.Errorf("%s is a symlink", name)
		}
	}
	for _, f := range []string{"usr/bin/ipcs", "usr/bin/pgrep", "bin/nmeter", "lib/" + multiarchTriplet() + "/libc.so.6"} {
		if _, ok := hdrs[f]; !ok {
			t.Errorf("busybox layer lacks %s", f)
		}
	}
	if h := hdrs["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/ = %+v, want mode 1777", h)
	}
	for _, line := range []string{"www-data:x:33:33:", "nobody:x:65534:65534:"} {
		if !strings.Contains(data["etc/passwd"], "\n"+line) {
			t.Errorf("/etc/passwd lacks %q", line)
		}
	}

	// nonewprivs: nnp is setuid root.
	nnp := imageLayers(t, all["registry.k8s.io/e2e-test-images/nonewprivs:1.3"].image)
	hdrs, _ = layerFiles(t, nnp[len(nnp)-1])
	if h := hdrs["usr/local/bin/nnp"]; h == nil || h.Mode != 0o4755 || h.Uid != 0 {
		t.Errorf("usr/local/bin/nnp = %+v, want mode 4755 owned by root", h)
	}

	// predefined group: uid 1000 is a member of gid 50000.
	pg := imageLayers(t, all["gcr.io/k8s-staging-cri-tools/test-image-predefined-group"].image)
	_, data = layerFiles(t, pg[len(pg)-1], "etc/passwd", "etc/group")
	if !strings.Contains(data["etc/passwd"], "\ndefault-user:x:1000:1000:") ||
		!strings.Contains(data["etc/group"], "\ngroup-defined-in-image:x:50000:default-user\n") {
		t.Errorf("predefined-group passwd/group:\n%s\n%s", data["etc/passwd"], data["etc/group"])
	}

	// hostnet-nginx listens on 12003.
	hn := imageLayers(t, all["gcr.io/k8s-staging-cri-tools/hostnet-nginx-"+hostPlatform().Architecture].image)
	_, data = layerFiles(t, hn[len(hn)-1], "etc/nginx/conf.d/default.conf")
	if !strings.Contains(data["etc/nginx/conf.d/default.conf"], "listen       12003;") {
		t.Errorf("hostnet-nginx default.conf:\n%s", data["etc/nginx/conf.d/default.conf"])
	}
}

func TestShimTestImages(t *testing.T) {
	all, _ := buildAll(t)
	for _, tc := range []struct {
		ref        string
		manifestMT types.MediaType
		layerMT    types.MediaType
		layers     int
	}{
		{"shim-test/zstd:1", types.OCIManifestSchema1, types.OCILayerZStd, 2},
		{"shim-test/uncompressed:1", types.OCIManifestSchema1, types.OCIUncompressedLayer, 2},
		{"shim-test/docker-schema2:1", types.DockerManifestSchema2, types.DockerLayer, 2},
		{"shim-test/bench:8x4m", types.OCIManifestSchema1, types.OCILayer, 8},
	} {
		img := all[tc.ref].image
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.MediaType != tc.manifestMT || len(m.Layers) != tc.layers {
			t.Errorf("%s: manifest %s with %d layers, want %s with %d", tc.ref, m.MediaType, len(m.Layers), tc.manifestMT, tc.layers)
		}
		for _, l := range m.Layers {
			if l.MediaType != tc.layerMT {
				t.Errorf("%s: layer %s has media type %s, want %s", tc.ref, l.Digest, l.MediaType, tc.layerMT)
			}
		}
	}

	// The zstd and uncompressed busybox layers unpack to the same tar as the
	// gzip one: one diff ID, three blobs.
	diffIDs := map[v1.Hash]bool{}
	blobs := map[v1.Hash]bool{}
	for _, r := range []string{"shim-test/zstd:1", "shim-test/uncompressed:1", "registry.k8s.io/e2e-test-images/busybox:1.29-2"} {
		l := imageLayers(t, all[r].image)[0]
		d, _ := l.DiffID()
		h, _ := l.Digest()
		diffIDs[d], blobs[h] = true, true
	}
	if len(diffIDs) != 1 || len(blobs) != 3 {
		t.Errorf("busybox layer in three encodings: %d diff IDs, %d blobs; want 1 and 3", len(diffIDs), len(blobs))
	}

	// Bench layers: 4 MiB of data each, all different.
	bench := imageLayers(t, all["shim-test/bench:8x4m"].image)
	sizes := map[v1.Hash]bool{}
	for i, l := range bench {
		hdrs, _ := layerFiles(t, l)
		var total int64
		for _, h := range hdrs {
			total += h.Size
		}
		if total != benchLayerSize {
			t.Errorf("bench layer %d holds %d bytes, want %d", i, total, benchLayerSize)
		}
		d, _ := l.Digest()
		sizes[d] = true
	}
	if len(sizes) != 8 {
		t.Errorf("bench layers: %d distinct blobs, want 8", len(sizes))
	}

	// Multi-arch: an OCI index of three platforms; only the host's has busybox.
	idx := all["shim-test/multiarch:1"].index
	if idx == nil {
		t.Fatal("shim-test/multiarch:1 is not an index")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 3 {
		t.Fatalf("index %s with %d manifests", im.MediaType, len(im.Manifests))
	}
	var plats []string
	for _, d := range im.Manifests {
		plats = append(plats, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != d.Platform.Architecture || cf.Variant != d.Platform.Variant {
			t.Errorf("manifest for %s has config arch %s/%s", d.Platform, cf.Architecture, cf.Variant)
		}
		hdrs, _ := layerFiles(t, imageLayers(t, img)[0])
		_, hasShell := hdrs["bin/sh"]
		if isHost := d.Platform.Architecture == hostPlatform().Architecture; hasShell != isHost {
			t.Errorf("platform %s: has /bin/sh %v, want %v", d.Platform, hasShell, isHost)
		}
	}
	if got := strings.Join(plats, ","); got != "linux/amd64,linux/arm64,linux/arm/v7" {
		t.Errorf("platforms %s", got)
	}
}

func TestImageDefValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		def  imageDef
	}{
		{"no refs", imageDef{layers: busyboxWith()}},
		{"no layers", imageDef{refs: []string{"x:1"}}},
		{"docker zstd", imageDef{refs: []string{"x:1"}, layers: busyboxWith(), docker: true, comp: zstded}},
		{"docker index", imageDef{refs: []string{"x:1"}, layers: busyboxWith(), docker: true, platforms: []string{"linux/amd64"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.def.validate(); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
	for _, def := range images() {
		if err := def.validate(); err != nil {
			t.Errorf("table entry %v: %v", def.refs, err)
		}
	}
}

// TestNodeE2EImages checks the images the node e2e suite of Kubernetes
// v1.37 pulls, under the names and tags test/utils/image/manifest.go gives.
func TestNodeE2EImages(t *testing.T) {
	all, _ := buildAll(t)
	const e = "registry.k8s.io/e2e-test-images/"
	for _, tc := range []struct {
		ref        string
		sameAs     string // "" or the reference of the same image
		user       string
		entrypoint []string
		cmd        []string
	}{
		{e + "busybox:1.37.0-2", "", "", nil, []string{"sh"}},
		{e + "nginx:1.27.0-2", e + "nginx:1.14-2", "", nil, []string{"nginx", "-g", "daemon off;"}},
		{e + "nginx:1.28.0-2", e + "nginx:1.14-2", "", nil, []string{"nginx", "-g", "daemon off;"}},
		{e + "nonewprivs:1.4", e + "nonewprivs:1.3", "", nil, []string{"nnp"}},
		{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.9", "65535:65535", []string{"/pause"}, nil},
		{e + "agnhost:2.66.1", "", "", []string{"/agnhost"}, []string{"pause"}},
		{e + "agnhost:2.55", e + "agnhost:2.66.1", "", []string{"/agnhost"}, []string{"pause"}},
		{e + "nonroot:1.5", "", "1234", nil, []string{"sh"}},
		{e + "ipc-utils:1.4", "", "", nil, []string{"sh"}},
		{e + "glibc-dns-testing:2.1.1", "", "", nil, []string{"sh"}},
	} {
		b, ok := all[tc.ref]
		if !ok {
			t.Errorf("%s is not built", tc.ref)
			continue
		}
		if tc.sameAs != "" && mustDigest(t, b) != mustDigest(t, all[tc.sameAs]) {
			t.Errorf("%s should be the image of %s", tc.ref, tc.sameAs)
		}
		cf, err := b.image.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != tc.user || strings.Join(c.Entrypoint, " ") != strings.Join(tc.entrypoint, " ") ||
			strings.Join(c.Cmd, " ") != strings.Join(tc.cmd, " ") {
			t.Errorf("%s: user %q entrypoint %q cmd %q; want %q %q %q", tc.ref, c.User, c.Entrypoint, c.Cmd, tc.user, tc.entrypoint, tc.cmd)
		}
	}

	// agnhost: the stand-in, its second name, the tools the specs call and
	// the user and group its image defines.
	ag := imageLayers(t, all[e+"agnhost:2.66.1"].image)
	hdrs, data := layerFiles(t, ag[len(ag)-1], "etc/passwd", "etc/group", "localhost.crt", "localhost.key")
	for _, f := range []string{"agnhost", "bin/bash", "usr/bin/curl", "usr/bin/nc", "uploads/"} {
		if _, ok := hdrs[f]; !ok {
			t.Errorf("agnhost layer lacks %s", f)
		}
	}
	if h := hdrs["agnhost-2"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "agnhost" {
		t.Errorf("agnhost-2 = %+v, want a symlink to agnhost", h)
	}
	if !strings.Contains(data["etc/passwd"], "\nuser-defined-in-image:x:1000:1000:") ||
		!strings.Contains(data["etc/group"], "\ngroup-defined-in-image:x:50000:user-defined-in-image\n") {
		t.Errorf("agnhost passwd/group:\n%s\n%s", data["etc/passwd"], data["etc/group"])
	}
	if _, err := tls.X509KeyPair([]byte(data["localhost.crt"]), []byte(data["localhost.key"])); err != nil {
		t.Errorf("localhost.crt/key: %v", err)
	}
	// ipc-utils has ipcmk next to busybox's image ipcs.
	ipc := imageLayers(t, all[e+"ipc-utils:1.4"].image)
	if hdrs, _ := layerFiles(t, ipc[len(ipc)-1]); hdrs["usr/bin/ipcmk"] == nil {
		t.Error("ipc-utils lacks usr/bin/ipcmk")
	}
}

// TestNodeE2EBusyboxShell: the node e2e busybox is the shared busybox layer
// plus ash 1.37 as /bin/sh, and (as root) its /bin/sh passes environment
// variables whose names are not shell names on to the commands it runs, as
// the ConfigMap and Secret "consumable via the environment" specs need,
// and words a failed redirection as the read-only rootfs spec expects.
func TestNodeE2EBusyboxShell(t *testing.T) {
	all, _ := buildAll(t)
	const ref = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	ls := imageLayers(t, all[ref].image)
	if len(ls) != 2 {
		t.Fatalf("%s has %d layers, want 2", ref, len(ls))
	}
	base := imageLayers(t, all["registry.k8s.io/e2e-test-images/busybox:1.29-2"].image)
	if d0, b0 := mustLayerDigest(t, ls[0]), mustLayerDigest(t, base[0]); d0 != b0 {
		t.Errorf("first layer %s, want the shared busybox layer %s", d0, b0)
	}
	hdrs, _ := layerFiles(t, ls[1])
	if h := hdrs["bin/sh"]; h == nil || h.Typeflag != tar.TypeReg {
		t.Errorf("bin/sh = %+v, want ash as a file", h)
	}

	if os.Geteuid() != 0 {
		t.Skip("running the image's shell (chroot) needs root")
	}
	root := t.TempDir()
	for _, l := range ls {
		unpackLayer(t, l, root)
	}
	cmd := exec.Command("/bin/sh", "-c", "env")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{pathEnv, "data-1=value-1", "$_-data-1=value-1", "#@!data-1=value-1", "CONFIG_DATA_1=value-1"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c env in the image: %v: %s", err, out)
	}
	for _, want := range []string{"data-1=value-1", "$_-data-1=value-1", "#@!data-1=value-1", "CONFIG_DATA_1=value-1"} {
		if !strings.Contains("\n"+string(out), "\n"+want+"\n") {
			t.Errorf("sh -c env in the image lacks %q:\n%s", want, out)
		}
	}
	// "should not write to root filesystem" [Conformance] compares the
	// container's log with ash's wording.
	cmd = exec.Command("/bin/sh", "-c", "echo test > /nonexistent/file")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{pathEnv}
	out, _ = cmd.CombinedOutput()
	if want := "/bin/sh: can't create /nonexistent/file: "; !strings.HasPrefix(string(out), want) {
		t.Errorf("a failed redirection in the image's sh says %q, want %q...", out, want)
	}
}

func mustLayerDigest(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// unpackLayer writes a layer's directories, files, symlinks and hard links
// under root (a later layer's entry replaces an earlier one; the images
// here have no whiteouts).
func unpackLayer(t *testing.T, l v1.Layer, root string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, filepath.Clean("/"+h.Name))
		if h.Typeflag != tar.TypeDir {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm())
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(root, filepath.Clean("/"+h.Linkname)), p)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()); err == nil {
				_, err = io.Copy(f, tr)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
