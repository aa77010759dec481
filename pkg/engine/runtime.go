package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/imagestore"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/nspin"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/timeline"
)

// RuntimeOptions configure the sandbox and container jobs.
type RuntimeOptions struct {
	State      string // state directory (tmpfs)
	Root       string // root directory (on disk): image VOLUME data in <root>/volumes
	RuntimeExe string // binary run as monitor (and its helpers)
	// InitExe is the binary a monitor runs as a container's init and an
	// exec's (cmd/shim-init); "": RuntimeExe.
	InitExe     string
	DB          *bolt.DB
	Images      *imagestore.Store
	Snapshotter snapshot.Snapshotter
	// Network networks pods that do not use the host network; nil when
	// pod networking is off.
	Network netdrv.Driver
	// Handlers maps a RuntimeClass handler to an OCI runtime binary; ""
	// (and the handlers "" and "native") run the native driver.
	Handlers     map[string]string
	SandboxImage string
	Spec         specgen.Options
	LogLevel     string
}

// Runtime holds the pod sandboxes and containers.
type Runtime struct {
	o      RuntimeOptions
	store  recordStore
	events *eventBus

	mu         sync.RWMutex
	sandboxes  map[string]*Sandbox
	containers map[string]*Container
	podNames   map[string]string // reserved pod names -> id
	ctrNames   map[string]string // reserved container names -> id
	monitors   map[string]*podMonitor
	handlers   map[string]*runtimeHandler // resolved once, read-only after
	nsDir      string
	features   *hostFeatures
	warmer     *libct.AttachWarmer // nil: none on this host
}

func newRuntime(ctx context.Context, o RuntimeOptions) (*Runtime, error) {
	r := &Runtime{
		o:          o,
		store:      recordStore{db: o.DB},
		events:     newEventBus(),
		sandboxes:  map[string]*Sandbox{},
		containers: map[string]*Container{},
		podNames:   map[string]string{},
		ctrNames:   map[string]string{},
		monitors:   map[string]*podMonitor{},
		nsDir:      filepath.Join(o.State, "ns"),
	}
	if o.Root == "" {
		return nil, fmt.Errorf("runtime without a root directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := r.store.init(); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(o.State, "pods"), r.libctRoot(), r.runcRoot()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	if err := nspin.PrepareDir(r.nsDir); err != nil {
		return nil, err
	}
	r.handlers = resolveHandlers(o.Handlers, r.libctRoot(), r.runcRoot())
	r.detectFeatures(ctx)
	if w, err := libct.NewAttachWarmer(); err != nil {
		log.G(ctx).WithError(err).Warn("no cgroup join warm-up: a container's first cgroup join may wait for the kernel's RCU grace period")
	} else {
		r.warmer = w
	}
	if err := r.recover(ctx); err != nil {
		return nil, fmt.Errorf("recovering pods: %w", err)
	}
	return r, nil
}

// Close stops following monitors (they and the pods keep running). The
// pin directory's bind mount is released when no pod holds a pin.
func (r *Runtime) Close() {
	r.mu.Lock()
	for id, m := range r.monitors {
		m.cancel()
		delete(r.monitors, id)
	}
	r.mu.Unlock()
	if pins, err := os.ReadDir(r.nsDir); err == nil && len(pins) == 0 {
		unmount(r.nsDir)
	}
}

func (r *Runtime) libctRoot() string { return filepath.Join(r.o.State, "libct") }
func (r *Runtime) runcRoot() string  { return filepath.Join(r.o.State, "runc") }
func (r *Runtime) podDir(id string) string {
	return filepath.Join(r.o.State, "pods", id)
}

// NetworkReady reports pod network readiness for CRI Status.
func (r *Runtime) NetworkReady(ctx context.Context) (bool, string, string) {
	if r.o.Network == nil {
		return false, "NetworkPluginNotReady", "pod networking is disabled in the config"
	}
	if err := r.o.Network.Ready(ctx); err != nil {
		return false, "NetworkPluginNotReady", err.Error()
	}
	return true, "", ""
}

// SnapshotRoots lists the snapshots containers use (for image GC).
func (r *Runtime) SnapshotRoots(context.Context) ([]string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.containers))
	for _, c := range r.containers {
		out = append(out, c.Snapshot)
		for _, v := range c.view().ImageVolumes {
			out = append(out, v.Snapshot)
		}
	}
	return out, nil
}

// resolve finds the full id of a sandbox or container from an id or a
// unique prefix of one; "" when there is none.
func resolve[T any](m map[string]T, id string) (string, error) {
	if id == "" {
		return "", nil
	}
	if _, ok := m[id]; ok {
		return id, nil
	}
	if len(id) < 6 {
		return "", nil
	}
	found := ""
	for k := range m {
		if strings.HasPrefix(k, id) {
			if found != "" {
				return "", fmt.Errorf("id prefix %q is ambiguous: %w", id, errdefs.ErrInvalidArgument)
			}
			found = k
		}
	}
	return found, nil
}

func (r *Runtime) sandboxID(id string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	full, _ := resolve(r.sandboxes, id)
	if full == "" {
		return id
	}
	return full
}

func (r *Runtime) containerID(id string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	full, _ := resolve(r.containers, id)
	if full == "" {
		return id
	}
	return full
}

func (r *Runtime) getSandbox(id string) (*Sandbox, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	full, err := resolve(r.sandboxes, id)
	if err != nil {
		return nil, err
	}
	if sb := r.sandboxes[full]; sb != nil {
		return sb, nil
	}
	return nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
}

func (r *Runtime) getContainer(id string) (*Container, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	full, err := resolve(r.containers, id)
	if err != nil {
		return nil, err
	}
	if c := r.containers[full]; c != nil && !c.Infra {
		return c, nil
	}
	return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
}

// podContainers lists the containers of a pod, infra included.
func (r *Runtime) podContainers(podID string) []*Container {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Container
	for _, c := range r.containers {
		if c.SandboxID == podID {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// saveSandbox persists sb.
func (r *Runtime) saveSandbox(sb *Sandbox) error {
	return r.updateSandbox(sb, func(*Sandbox) {})
}

// runtimeHandler is one RuntimeClass handler, resolved once when the
// runtime is wired from the config: the execution driver it selects and
// where that driver keeps its state. Pods, their monitors (the flags they
// pass their helpers) and the clean-up of containers whose monitor is gone
// all use this one resolution.
type runtimeHandler struct {
	name     string
	binary   string // an external OCI runtime; "" for the native driver
	root     string // the driver's state root
	driver   execdrv.Driver
	features HandlerFeatures // probed at start (detectFeatures)
}

// resolveHandlers resolves the configured RuntimeClass handlers: "" (the
// default) and "native" run the native driver, as does a handler whose
// binary is "" or "native"; any other runs its binary with the oci-binary
// driver, state under <runcRoot>/<handler>.
func resolveHandlers(configured map[string]string, libctRoot, runcRoot string) map[string]*runtimeHandler {
	native := func(name string) *runtimeHandler {
		return &runtimeHandler{name: name, root: libctRoot, driver: execdrv.NewNative(libctRoot)}
	}
	out := map[string]*runtimeHandler{"": native(""), "native": native("native")}
	for name, bin := range configured {
		if bin == "" || bin == "native" {
			out[name] = native(name)
			continue
		}
		root := filepath.Join(runcRoot, name)
		out[name] = &runtimeHandler{name: name, binary: bin, root: root, driver: execdrv.NewOCIBinary(bin, root)}
	}
	return out
}

// handler returns a RuntimeClass handler; one that is not configured is
// ErrNotFound.
func (r *Runtime) handler(name string) (*runtimeHandler, error) {
	if h := r.handlers[name]; h != nil {
		return h, nil
	}
	return nil, fmt.Errorf("runtime handler %q is not configured: %w", name, errdefs.ErrNotFound)
}

// podDriver is the execution driver of a pod's handler, for work on
// containers whose monitor is gone (their state and cgroups are still
// there to clean); the default handler's when the pod has no record. A
// handler gone from the config since is ErrFailedPrecondition.
func (r *Runtime) podDriver(podID string) (execdrv.Driver, error) {
	name := ""
	if sb, err := r.getSandbox(podID); err == nil {
		name = sb.view().Handler
	}
	h := r.handlers[name]
	if h == nil {
		// The config changed since the pod ran: its containers cannot
		// be reached, and must not be handed to another driver.
		return nil, fmt.Errorf("pod %s was run by runtime handler %q, which is no longer configured: %w",
			podID, name, errdefs.ErrFailedPrecondition)
	}
	return h.driver, nil
}

// monitorArgs are the monitor flags selecting the handler's execution
// driver; the monitor passes them on to its helpers.
func (h *runtimeHandler) monitorArgs(logLevel string) []string {
	args := []string{"--log-level", logLevel, "--runtime-root", h.root}
	if h.binary != "" {
		args = append(args, "--runtime-binary", h.binary)
	}
	return args
}

// podMonitor is the daemon's handle on a pod's monitor.
type podMonitor struct {
	client *monitor.Client
	cancel context.CancelFunc
}

// monitorFor returns the pod's monitor, starting it if needed (or waiting
// for the one RunPodSandbox started).
func (r *Runtime) monitorFor(ctx context.Context, sb *Sandbox) (*monitor.Client, error) {
	if wait := sb.monitorStarted; wait != nil {
		if err := wait(); err != nil {
			return nil, err
		}
	}
	return r.monitorNow(ctx, sb)
}

// monitorNow returns the pod's monitor, starting it if it does not run.
func (r *Runtime) monitorNow(ctx context.Context, sb *Sandbox) (*monitor.Client, error) {
	r.mu.Lock()
	m := r.monitors[sb.ID]
	r.mu.Unlock()
	if m != nil {
		timeline.Mark(ctx, phaseMonitorReuse)
		return m.client, nil
	}
	h, err := r.handler(sb.Handler)
	if err != nil {
		return nil, err
	}
	args := h.monitorArgs(r.o.LogLevel)
	if r.o.InitExe != "" {
		args = append(args, "--init-binary", r.o.InitExe)
	}
	sock := filepath.Join(sb.Dir, monitor.SocketName)
	existing := &monitor.Client{Socket: sock}
	if st, err := existing.Call(ctx, &monitor.Request{Op: monitor.OpState}); err == nil {
		// A monitor from an earlier, interrupted call: use it.
		existing.SetState(st)
		r.attachMonitor(sb.ID, existing)
		timeline.Mark(ctx, phaseMonitorReuse)
		return existing, nil
	}
	c, err := monitor.Spawn(ctx, monitor.SpawnOpts{Exe: r.o.RuntimeExe, PodID: sb.ID, Dir: sb.Dir, Args: args})
	if err != nil {
		// It may be up and serving after all: do not leave it behind.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		existing.Call(sctx, &monitor.Request{Op: monitor.OpShutdown})
		cancel()
		return nil, err
	}
	log.G(ctx).WithField(log.FieldPodID, sb.ID).Debug("monitor started")
	r.mu.RLock()
	published := r.sandboxes[sb.ID] == sb
	r.mu.RUnlock()
	if published {
		if err := r.updateSandbox(sb, func(sb *Sandbox) { sb.Monitor = true }); err != nil {
			return nil, err
		}
	} else {
		// RunPodSandbox records the pod when it is complete.
		sb.mu.Lock()
		sb.Monitor = true
		sb.mu.Unlock()
	}
	r.attachMonitor(sb.ID, c)
	timeline.Mark(ctx, phaseMonitorSpawn)
	return c, nil
}

// startMonitorEarly starts the pod's monitor in the background, so that
// it comes up while RunPodSandbox sets up the pod's namespaces and
// network; sb.monitorStarted waits for it (and gives every caller the
// same result).
func (r *Runtime) startMonitorEarly(ctx context.Context, sb *Sandbox) {
	done := make(chan struct{})
	var err error
	// Not the job's context: the job's timeline is marked by the job.
	sctx, cancel := context.WithTimeout(timeline.With(context.WithoutCancel(ctx), nil), time.Minute)
	sb.monitorStarted = func() error {
		<-done
		return err
	}
	go func() {
		defer close(done)
		defer cancel()
		_, err = r.monitorNow(sctx, sb)
	}()
}

// attachMonitor remembers a pod's monitor and follows its exit events.
func (r *Runtime) attachMonitor(podID string, c *monitor.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.monitors[podID] = &podMonitor{client: c, cancel: cancel}
	r.mu.Unlock()
	go r.followEvents(ctx, podID, c)
}

func (r *Runtime) detachMonitor(podID string) {
	r.mu.Lock()
	m := r.monitors[podID]
	delete(r.monitors, podID)
	r.mu.Unlock()
	if m != nil {
		m.cancel()
	}
}

func (r *Runtime) monitorClient(podID string) *monitor.Client {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if m := r.monitors[podID]; m != nil {
		return m.client
	}
	return nil
}

// monitorOf returns the client of the container's pod monitor.
func (r *Runtime) monitorOf(c *Container) (*monitor.Client, error) {
	if m := r.monitorClient(c.SandboxID); m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("the monitor of pod %s is not running: %w", c.SandboxID, errdefs.ErrFailedPrecondition)
}
