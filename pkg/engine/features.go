package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
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
	rro        bool
	idmap      error // nil: pods with user namespaces can run
	handlers   []HandlerFeatures
	byHandlers map[string]HandlerFeatures
}

// detectFeatures probes the host (mount_setattr, user namespaces and
// idmapped overlayfs, tmpfs and state-dir mounts) and asks every OCI
// runtime handler for its features.
func (r *Runtime) detectFeatures(ctx context.Context) {
	start := time.Now()
	hf := &hostFeatures{rro: hostinfo.RecursiveMountAttrs(), byHandlers: map[string]HandlerFeatures{}}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	hf.idmap = hostinfo.IDMappedMounts(pctx, r.o.RuntimeExe, r.o.State)
	cancel()
	names := []string{"", "native"}
	for name := range r.o.Handlers {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	sort.Strings(names[2:])
	for _, name := range names {
		var f HandlerFeatures
		if bin := r.o.Handlers[name]; bin != "" && bin != "native" {
			f = ociHandlerFeatures(ctx, execdrv.NewOCIBinary(bin, filepath.Join(r.runcRoot(), name)), hf)
		} else {
			f = handlerFeatures(execdrv.NativeFeatures(), hf, "native")
		}
		f.Name = name
		hf.handlers = append(hf.handlers, f)
		hf.byHandlers[name] = f
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

func ociHandlerFeatures(ctx context.Context, o *execdrv.OCIBinary, hf *hostFeatures) HandlerFeatures {
	f, err := o.Features(ctx)
	if err != nil {
		return HandlerFeatures{Missing: fmt.Sprintf("%s features: %v", o.Binary, err)}
	}
	return handlerFeatures(f, hf, o.Binary)
}

// RuntimeHandlers lists the RuntimeClass handlers and their features: ""
// (the default) and "native" are shim's own executor, then the configured
// ones.
func (r *Runtime) RuntimeHandlers() []HandlerFeatures {
	return slices.Clone(r.features.handlers)
}

// checkHandlerUserns refuses a pod with its own user namespace for a
// handler that cannot run one, saying why.
func (r *Runtime) checkHandlerUserns(handler string, cfg *runtimeapi.PodSandboxConfig) error {
	if podUserns(cfg) == nil {
		return nil
	}
	f, ok := r.features.byHandlers[handler]
	if !ok {
		return fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrNotFound)
	}
	if !f.UserNamespaces {
		return fmt.Errorf("runtime handler %q cannot run pods with a user namespace (%s): %w", handler, f.Missing, errdefs.ErrNotImplemented)
	}
	return nil
}
