package main

import (
	"fmt"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Name prefixes of the images critest v1.37.0 and the node e2e suite of
// Kubernetes v1.37 pull.
const (
	e2e      = "registry.k8s.io/e2e-test-images/" // framework.DefaultRegistryE2ETestImagesPrefix
	criTools = "gcr.io/k8s-staging-cri-tools/"    // validate.registry
	ecrHub   = "public.ecr.aws/docker/library/"   // benchmark.defaultImageListingPrefix
)

const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// imageDef is one image and every reference it is pushed under. Each
// reference is the name a test pulls; it is pushed to the loopback registry
// at the repository path a hosts.toml mirror maps it to (docker.io/library/x
// -> library/x, gcr.io/a/b -> a/b, shim-test/x -> shim-test/x).
type imageDef struct {
	refs   []string
	layers []layerSpec // bottom first
	config v1.Config
	comp   compression // of every layer; gzip unless set
	docker bool        // Docker schema2 media types instead of OCI
	// platforms, if set, makes the reference an OCI index with one manifest
	// per platform: this machine's gets layers, the others only a
	// placeholder layer.
	platforms []string
}

// Image configs.
var (
	shellConfig = v1.Config{Env: []string{pathEnv}, Cmd: []string{"sh"}}
	nginxConfig = v1.Config{
		Env:          []string{pathEnv, "NGINX_VERSION=1.14.2"},
		Cmd:          []string{"nginx", "-g", "daemon off;"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}},
		StopSignal:   "SIGTERM",
	}
	httpdConfig = v1.Config{
		Env:          []string{"PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HTTPD_PREFIX=/usr/local/apache2"},
		Cmd:          []string{"httpd-foreground"},
		WorkingDir:   "/usr/local/apache2",
		ExposedPorts: map[string]struct{}{"80/tcp": {}},
	}
	// k8s test/images/nonewprivs: no USER (root), CMD ["nnp"].
	nonewprivsConfig = v1.Config{Env: []string{pathEnv}, Cmd: []string{"nnp"}}
	// As registry.k8s.io/pause:3.9.
	pauseConfig = v1.Config{Env: []string{pathEnv}, Entrypoint: []string{"/pause"}, User: "65535:65535", WorkingDir: "/"}
	benchConfig = v1.Config{Env: []string{pathEnv}}
)

func withUser(c v1.Config, user string) v1.Config {
	c.User = user
	return c
}

func busyboxWith(extra ...layerSpec) []layerSpec {
	return append([]layerSpec{busyboxLayer}, extra...)
}

func benchLayers(n int) []layerSpec {
	specs := make([]layerSpec, n)
	for i := range specs {
		specs[i] = benchLayer(i)
	}
	return specs
}

// images is every image we build. cri-tools' own sources are the reference
// for the gcr.io/k8s-staging-cri-tools ones (images/build and
// images/*/Dockerfile); test-image-digest is not here, because its pinned
// digest cannot be reproduced.
func images() []imageDef {
	defs := append([]imageDef{
		// critest's default container image (and busybox under the names
		// its benchmarks and our own tests use; the node e2e suite's
		// busybox:1.37.0-2 is in k8s.go).
		{refs: []string{
			e2e + "busybox:1.29-2",
			"docker.io/library/busybox:latest",
			"docker.io/library/busybox:1.36",
			ecrHub + "busybox:1.35.0-glibc",
			ecrHub + "busybox:1-uclibc",
			ecrHub + "busybox:1",
			ecrHub + "busybox:1-glibc",
			ecrHub + "busybox:1-musl",
		}, layers: busyboxWith(), config: shellConfig},
		{refs: []string{e2e + "nginx:1.14-2", e2e + "nginx:1.27.0-2", e2e + "nginx:1.28.0-2"}, layers: busyboxWith(nginxLayer), config: nginxConfig},
		{refs: []string{e2e + "httpd:2.4.39-4"}, layers: busyboxWith(httpdLayer), config: httpdConfig},
		{refs: []string{e2e + "nonewprivs:1.3", e2e + "nonewprivs:1.4"}, layers: busyboxWith(nonewprivsLayer), config: nonewprivsConfig},
		{refs: []string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9", "registry.k8s.io/pause:3.10.2"}, layers: []layerSpec{pauseLayer}, config: pauseConfig},

		// images/image-test: busybox plus an empty file named after the image.
		{refs: []string{criTools + "test-image-latest"}, layers: busyboxWith(fileLayer("test-image-latest", "")), config: shellConfig},
		{refs: []string{criTools + "test-image-tag:test"}, layers: busyboxWith(fileLayer("test", "")), config: shellConfig},
		{refs: []string{criTools + "test-image-tag:all"}, layers: busyboxWith(fileLayer("all", "")), config: shellConfig},
		{refs: []string{criTools + "test-image-1:latest"}, layers: busyboxWith(fileLayer("test-image-1", "")), config: shellConfig},
		{refs: []string{criTools + "test-image-2:latest"}, layers: busyboxWith(fileLayer("test-image-2", "")), config: shellConfig},
		{refs: []string{criTools + "test-image-3:latest"}, layers: busyboxWith(fileLayer("test-image-3", "")), config: shellConfig},
		{refs: []string{criTools + "test-image-tags:1", criTools + "test-image-tags:2", criTools + "test-image-tags:3"},
			layers: busyboxWith(fileLayer("same-image", "")), config: shellConfig},

		// images/image-user: busybox with only USER set.
		{refs: []string{criTools + "test-image-user-uid"}, layers: busyboxWith(), config: withUser(shellConfig, "1002")},
		{refs: []string{criTools + "test-image-user-username"}, layers: busyboxWith(), config: withUser(shellConfig, "www-data")},
		{refs: []string{criTools + "test-image-user-uid-group"}, layers: busyboxWith(), config: withUser(shellConfig, "1003:1003")},
		{refs: []string{criTools + "test-image-user-username-group"}, layers: busyboxWith(), config: withUser(shellConfig, "www-data:www-data")},
		// images/image-predefined-group.
		{refs: []string{criTools + "test-image-predefined-group"}, layers: busyboxWith(predefinedGroupLayer), config: withUser(shellConfig, "1000")},
		// images/hostnet-nginx: nginx on 12003, named per architecture.
		{refs: []string{criTools + "hostnet-nginx-" + runtime.GOARCH}, layers: busyboxWith(nginxLayer, hostnetNginxLayer), config: nginxConfig},

		// The node e2e suite's (k8s.go).
	}, k8sImages()...)
	return append(defs, []imageDef{
		// shim's own.
		{refs: []string{"shim-test/multiarch:1"}, layers: busyboxWith(fileLayer("etc/shim-test", "multiarch\n")), config: shellConfig,
			platforms: []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}},
		{refs: []string{"shim-test/zstd:1"}, layers: busyboxWith(fileLayer("etc/shim-test", "zstd\n")), config: shellConfig, comp: zstded},
		{refs: []string{"shim-test/uncompressed:1"}, layers: busyboxWith(fileLayer("etc/shim-test", "uncompressed\n")), config: shellConfig, comp: uncompressed},
		{refs: []string{"shim-test/docker-schema2:1"}, layers: busyboxWith(fileLayer("etc/shim-test", "docker-schema2\n")), config: shellConfig, docker: true},
		{refs: []string{"shim-test/bench:8x4m"}, layers: benchLayers(8), config: benchConfig},
	}...)
}

// validate checks a definition before anything is built.
func (d imageDef) validate() error {
	if len(d.refs) == 0 || len(d.layers) == 0 {
		return fmt.Errorf("image %v: needs references and layers: %w", d.refs, errdefs.ErrInvalidArgument)
	}
	if d.docker && d.comp != gzipped {
		return fmt.Errorf("image %v: Docker schema2 layers are gzip here: %w", d.refs, errdefs.ErrInvalidArgument)
	}
	if d.docker && len(d.platforms) > 0 {
		return fmt.Errorf("image %v: multi-platform images are OCI indexes here: %w", d.refs, errdefs.ErrInvalidArgument)
	}
	return nil
}
