package main

import (
	"context"
	"fmt"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// inputs are the host files the images are made of.
type inputs struct {
	busybox string            // a non-standalone busybox (see busybox.go)
	ipcs    string            // util-linux ipcs
	progs   map[string][]byte // compiled c/*.c by program name

	// For the node e2e images (k8s.go).
	agnhost []byte // the agnhost stand-in (./agnhost), static
	bash    string // host programs, copied with their libraries
	curl    string
	ipcmk   string
	nc      string // Debian's netcat-openbsd nc
	ash     string // ash of upstream busybox 1.37 (ash.go)
}

// hostPrograms are the defaults of the host programs in inputs.
type hostPrograms struct {
	ipcs, bash, curl, ipcmk string
}

var defaultHostPrograms = hostPrograms{ipcs: "/usr/bin/ipcs", bash: "/bin/bash", curl: "/usr/bin/curl", ipcmk: "/usr/bin/ipcmk"}

// gatherInputs finds or builds everything the images are made of.
func gatherInputs(ctx context.Context, busybox, cacheDir, cc string, host hostPrograms) (inputs, error) {
	bb, err := findBusybox(ctx, busybox, cacheDir)
	if err != nil {
		return inputs{}, err
	}
	progs, err := compileC(ctx, cc)
	if err != nil {
		return inputs{}, err
	}
	agnhost, err := buildAgnhost(ctx)
	if err != nil {
		return inputs{}, err
	}
	nc, err := cachedDebFile(ctx, cacheDir, netcatPackage, "bin/nc.openbsd")
	if err != nil {
		return inputs{}, err
	}
	ash, err := cachedAsh(ctx, cacheDir)
	if err != nil {
		return inputs{}, err
	}
	return inputs{busybox: bb, ipcs: host.ipcs, progs: progs,
		agnhost: agnhost, bash: host.bash, curl: host.curl, ipcmk: host.ipcmk, nc: nc, ash: ash}, nil
}

// builder makes images from imageDefs. It builds every layer once per
// compression, so images that list the same layer share its blob.
type builder struct {
	in      inputs
	applets []string
	tars    map[string][]byte // layer name -> tar
	layers  map[layerKey]*layer
}

type layerKey struct {
	name string
	comp compression
}

func newBuilder(ctx context.Context, in inputs) (*builder, error) {
	for _, p := range []string{"pause", "nginx", "nnp", "pgrep", "nmeter"} {
		if len(in.progs[p]) == 0 {
			return nil, fmt.Errorf("program %s not compiled: %w", p, errdefs.ErrNotFound)
		}
	}
	if err := in.checkK8s(); err != nil {
		return nil, err
	}
	applets, err := busyboxApplets(ctx, in.busybox)
	if err != nil {
		return nil, err
	}
	return &builder{in: in, applets: applets, tars: map[string][]byte{}, layers: map[layerKey]*layer{}}, nil
}

func (b *builder) layer(spec layerSpec, c compression) (*layer, error) {
	if l, ok := b.layers[layerKey{spec.name, c}]; ok {
		return l, nil
	}
	tarball, ok := b.tars[spec.name]
	if !ok {
		t, err := spec.build(b)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", spec.name, err)
		}
		if tarball, err = t.Tar(); err != nil {
			return nil, fmt.Errorf("layer %s: %w", spec.name, err)
		}
		b.tars[spec.name] = tarball
	}
	l, err := newLayer(tarball, c)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", spec.name, err)
	}
	b.layers[layerKey{spec.name, c}] = l
	return l, nil
}

// built is the result of one imageDef: an image, or an index of images.
type built struct {
	def   imageDef
	image v1.Image
	index v1.ImageIndex
}

func (b built) digest() (v1.Hash, error) {
	if b.index != nil {
		return b.index.Digest()
	}
	return b.image.Digest()
}

func hostPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = "v7"
	}
	return p
}

func (b *builder) build(def imageDef) (built, error) {
	if err := def.validate(); err != nil {
		return built{}, err
	}
	if len(def.platforms) == 0 {
		img, err := b.image(def, hostPlatform(), def.layers)
		return built{def: def, image: img}, err
	}
	host := hostPlatform()
	adds := make([]mutate.IndexAddendum, 0, len(def.platforms))
	for _, ps := range def.platforms {
		plat, err := v1.ParsePlatform(ps)
		if err != nil {
			return built{}, fmt.Errorf("image %v: platform %q: %w", def.refs, ps, errdefs.ErrInvalidArgument)
		}
		specs := []layerSpec{placeholderLayer(ps)}
		if plat.OS == host.OS && plat.Architecture == host.Architecture {
			specs = def.layers
		}
		img, err := b.image(def, *plat, specs)
		if err != nil {
			return built{}, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	return built{def: def, index: idx}, nil
}

func (b *builder) image(def imageDef, plat v1.Platform, specs []layerSpec) (v1.Image, error) {
	manifestMT, configMT := types.OCIManifestSchema1, types.OCIConfigJSON
	if def.docker {
		manifestMT, configMT = types.DockerManifestSchema2, types.DockerConfigJSON
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, manifestMT), configMT)
	cfg := &v1.ConfigFile{
		Architecture: plat.Architecture,
		OS:           plat.OS,
		Variant:      plat.Variant,
		Created:      v1.Time{Time: epoch},
		Config:       def.config,
		RootFS:       v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		return nil, err
	}
	adds := make([]mutate.Addendum, 0, len(specs))
	for _, spec := range specs {
		l, err := b.layer(spec, def.comp)
		if err != nil {
			return nil, err
		}
		if def.docker {
			l = l.withMediaType(types.DockerLayer)
		}
		adds = append(adds, mutate.Addendum{
			Layer:   l,
			History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "shim hack/testimages: " + spec.name},
		})
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("image %v (%s): %w", def.refs, layerNames(specs), err)
	}
	// Check it serialises now rather than halfway through a push.
	if _, err := img.RawManifest(); err != nil {
		return nil, fmt.Errorf("image %v: manifest: %w", def.refs, err)
	}
	if _, err := img.RawConfigFile(); err != nil {
		return nil, fmt.Errorf("image %v: config: %w", def.refs, err)
	}
	return img, nil
}
