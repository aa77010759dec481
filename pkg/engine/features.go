package engine

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/hostinfo"
	"github.com/shim-cri/shim/pkg/log"
)

// HandlerFeatures is what one RuntimeClass handler supports on this host,
// as CRI Status reports it, with the reason for each feature it lacks.
type HandlerFeatures struct {
	Name              string
	RecursiveReadOnly bool
	UserNamespaces    bool
	// Missing explains the features it lacks ("" when it has them all).
	Missing string
}

// hostFeatures are the host's side of the handler features: found once at
// start.
type hostFeatures struct {
	rro      bool
	idmap    error             // nil: pods with user namespaces can run
	handlers []HandlerFeatures // in RuntimeHandlers' order
}

// detectFeatures probes the host (mount_setattr, user namespaces and
// idmapped overlayfs, tmpfs and state-dir mounts) and asks every runtime
// handler's driver for its features.
func (r *Runtime) detectFeatures(ctx context.Context) {
	start := time.Now()
	hf := &hostFeatures{rro: hostinfo.RecursiveMountAttrs()}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	hf.idmap = hostinfo.IDMappedMounts(pctx, r.o.RuntimeExe, r.o.State)
	cancel()
	names := []string{"", "native"}
	for name := range r.handlers {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	sort.Strings(names[2:])
	for _, name := range names {
		h := r.handlers[name]
		h.features = driverFeatures(ctx, h, hf)
		h.features.Name = name
		f := h.features
		hf.handlers = append(hf.handlers, f)
		l := log.G(ctx).WithField("handler", name).WithField("recursive_read_only", f.RecursiveReadOnly).
			WithField("user_namespaces", f.UserNamespaces)
		if f.Missing != "" {
			l = l.WithField("missing", f.Missing)
		}
		l.Info("runtime handler features")
	}
	log.G(ctx).WithField(log.FieldDuration, time.Since(start).Round(time.Microsecond).String()).Debug("features probed")
	r.features = hf
}

// handlerFeatures combines a runtime's OCI features with the host's.
func handlerFeatures(f *features.Features, hf *hostFeatures, who string) HandlerFeatures {
	var out HandlerFeatures
	var missing []string
	switch {
	case !slices.Contains(f.MountOptions, "rro"):
		missing = append(missing, who+" has no rro mount option")
	case !hf.rro:
		missing = append(missing, "the kernel has no mount_setattr (recursive read-only mounts)")
	default:
		out.RecursiveReadOnly = true
	}
	idmap := f.Linux != nil && f.Linux.MountExtensions != nil && f.Linux.MountExtensions.IDMap != nil &&
		f.Linux.MountExtensions.IDMap.Enabled != nil && *f.Linux.MountExtensions.IDMap.Enabled
	switch {
	case f.Linux == nil || !slices.Contains(f.Linux.Namespaces, string(specs.UserNamespace)):
		missing = append(missing, who+" has no user namespaces")
	case !idmap:
		missing = append(missing, who+" has no idmapped mounts")
	case hf.idmap != nil:
		missing = append(missing, "user namespaces: "+hf.idmap.Error())
	default:
		out.UserNamespaces = true
	}
	for i, m := range missing {
		if i > 0 {
			out.Missing += "; "
		}
		out.Missing += m
	}
	return out
}

// driverFeatures asks a handler's driver for its OCI features (the
// native driver's are built in; an OCI runtime is asked with `<runtime>
// features`) and combines them with the host's.
func driverFeatures(ctx context.Context, h *runtimeHandler, hf *hostFeatures) HandlerFeatures {
	who := h.binary
	if who == "" {
		who = "native"
	}
	f, err := h.driver.Features(ctx)
	if err != nil {
		return HandlerFeatures{Missing: fmt.Sprintf("%s features: %v", who, err)}
	}
	return handlerFeatures(f, hf, who)
}

// RuntimeHandlers lists the RuntimeClass handlers and their features: ""
// (the default) and "native" are shim's own executor, then the configured
// ones.
func (r *Runtime) RuntimeHandlers() []HandlerFeatures {
	return slices.Clone(r.features.handlers)
}

// checkHandlerUserns refuses a pod with its own user namespace for a
// handler that cannot run one, saying why.
func checkHandlerUserns(h *runtimeHandler, cfg *runtimeapi.PodSandboxConfig) error {
	if podUserns(cfg) == nil {
		return nil
	}
	if f := h.features; !f.UserNamespaces {
		return fmt.Errorf("runtime handler %q cannot run pods with a user namespace (%s): %w", h.name, f.Missing, errdefs.ErrNotImplemented)
	}
	return nil
}
