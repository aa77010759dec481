package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/nspin"
	"github.com/shim-cri/shim/pkg/timeline"
)

// RunPodRequest asks for a pod sandbox.
type RunPodRequest struct {
	Config  *runtimeapi.PodSandboxConfig
	Handler string
}

// defaultShmSize is the size of a pod's /dev/shm.
const defaultShmSize = 64 << 20

func podName(m *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%d", m.GetName(), m.GetNamespace(), m.GetUid(), m.GetAttempt())
}

func nsOptions(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.NamespaceOption {
	return cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
}

// rollback runs cleanup steps in reverse order on a fresh context, so a
// cancelled request still cleans up.
type rollback []func(ctx context.Context) error

func (rb *rollback) add(f func(ctx context.Context) error) { *rb = append(*rb, f) }

func (rb rollback) run(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for i := len(rb) - 1; i >= 0; i-- {
		if err := rb[i](cctx); err != nil {
			log.G(ctx).WithError(err).Warn("rollback step failed")
		}
	}
}

// runPod creates a pod sandbox: namespaces pinned, pod files written,
// /dev/shm mounted, network set up, and (only for a shared pid namespace)
// the infra process started.
func (r *Runtime) runPod(ctx context.Context, j *Job, req RunPodRequest) (_ *Sandbox, retErr error) {
	cfg := req.Config
	if err := specgen.ValidatePodConfig(cfg); err != nil {
		return nil, err
	}
	// The first container's create (or a shared-PID pod's infra) joins a
	// cgroup soon: warm its lock (libct.AttachWarmer).
	r.warmer.Warm()
	sysctls, err := specgen.PodSysctls(cfg)
	if err != nil {
		return nil, err
	}
	h, err := r.handler(req.Handler)
	if err != nil {
		return nil, err
	}
	if err := checkHandlerUserns(h, cfg); err != nil {
		return nil, err
	}
	name := podName(cfg.GetMetadata())
	r.mu.Lock()
	if id, ok := r.podNames[name]; ok {
		sb := r.sandboxes[id]
		r.mu.Unlock()
		if sb != nil && sb.view().State == SandboxReady {
			j.Logf("pod %s already runs as %s", name, id)
			return sb, nil
		}
		return nil, fmt.Errorf("pod name %q is reserved by sandbox %s: %w", name, id, errdefs.ErrAlreadyExists)
	}
	id := newID()
	r.podNames[name] = id
	r.mu.Unlock()
	var rb rollback
	rb.add(func(context.Context) error {
		r.mu.Lock()
		delete(r.podNames, name)
		r.mu.Unlock()
		return nil
	})
	defer func() {
		if retErr != nil {
			rb.run(ctx)
		}
	}()
	ctx = log.WithFields(ctx, map[string]any{log.FieldPodID: id})
	j.Mark(phaseValidate)

	cfgPB, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	sb := &Sandbox{ID: id, Name: name, ConfigPB: cfgPB, State: SandboxReady, CreatedAt: time.Now(),
		Handler: req.Handler, Dir: r.podDir(id), config: cfg}
	if err := os.MkdirAll(filepath.Join(sb.Dir, "ctrs"), 0o711); err != nil {
		return nil, err
	}
	rb.add(func(context.Context) error { return removePodDir(sb.Dir) })
	// The pod's monitor comes up while the rest is set up: its
	// containers (and a shared PID namespace's infra process) need it.
	r.startMonitorEarly(ctx, sb)
	rb.add(func(ctx context.Context) error {
		sb.monitorStarted()
		return r.stopMonitor(ctx, sb)
	})

	ns := nsOptions(cfg)
	hostNet := ns.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostname := cfg.GetHostname()
	if hostNet || hostname == "" {
		if hostname, err = os.Hostname(); err != nil {
			return nil, err
		}
	}
	if err := r.podNamespaces(ctx, sb, hostname, sysctls, &rb); err != nil {
		return nil, err
	}
	files, err := podFiles(hostname, hostNet, cfg.GetDnsConfig())
	if err != nil {
		return nil, err
	}
	if sb.Files, err = mountPodFiles(sb.Dir, files); err != nil {
		return nil, err
	}
	rb.add(func(context.Context) error { return unmount(sb.Files) })
	j.Mark(phasePodFiles)
	if !hostNet {
		if err := r.setupNetwork(ctx, j, sb, &rb); err != nil {
			return nil, err
		}
		j.Mark(phaseNetwork)
	}
	if ns.GetPid() == runtimeapi.NamespaceMode_POD {
		if err := r.startInfra(ctx, j, sb); err != nil {
			return nil, fmt.Errorf("starting the pod's infra process: %w", err)
		}
		rb.add(func(ctx context.Context) error {
			for _, c := range r.podContainers(sb.ID) {
				r.killContainer(ctx, c, 0)
				if err := r.deleteContainer(ctx, c); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := sb.monitorStarted(); err != nil {
		return nil, fmt.Errorf("starting the pod's monitor: %w", err)
	}
	j.Mark(phaseMonitor)
	rb.add(func(context.Context) error { return r.store.delete(bucketSandboxes, sb.ID) })
	if err := r.saveSandbox(sb); err != nil {
		return nil, err
	}
	j.Mark(phaseRecord)
	sb.mu.Lock()
	sb.timeline = j.Timeline()
	sb.mu.Unlock()
	r.mu.Lock()
	r.sandboxes[id] = sb
	r.mu.Unlock()
	j.Logf("pod %s ready (ips %v)", name, sb.IPs)
	return sb, nil
}

// podNamespaces pins the pod's namespaces (user, with its own user
// namespace; net and uts, without the host network; ipc, without the
// host IPC), sets its hostname, mounts its /dev/shm and writes its
// sysctls, each inside the namespace it belongs to.
func (r *Runtime) podNamespaces(ctx context.Context, sb *Sandbox, hostname string, sysctls map[string]map[string]string, rb *rollback) error {
	ns := nsOptions(sb.config)
	hostNet := ns.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := ns.GetIpc() == runtimeapi.NamespaceMode_NODE
	// With a pod user namespace, a holder makes it with kubelet's
	// mappings and the pod's other namespaces owned by it.
	holder, err := r.holdUserns(ctx, sb.config, hostNet, hostIPC)
	if err != nil {
		return err
	}
	if holder != nil {
		defer holder.Close()
	}
	pin := func(kind string, dst *string) error {
		p := filepath.Join(r.nsDir, sb.ID+"-"+kind)
		var err error
		if holder != nil {
			err = nspin.Adopt(ctx, kind, holder.Path(kind), p)
		} else {
			err = nspin.Pin(ctx, kind, p)
		}
		if err != nil {
			return err
		}
		rb.add(func(context.Context) error { return nspin.Unpin(p) })
		*dst = p
		return nil
	}
	if holder != nil {
		if err := pin(nspin.User, &sb.UserNS); err != nil {
			return err
		}
	}
	if !hostNet {
		if err := pin(nspin.Net, &sb.NetNS); err != nil {
			return err
		}
		if err := pin(nspin.UTS, &sb.UTSNS); err != nil {
			return err
		}
		if err := nspin.SetHostname(sb.UTSNS, hostname); err != nil {
			return err
		}
	}
	if !hostIPC {
		if err := pin(nspin.IPC, &sb.IPCNS); err != nil {
			return err
		}
	}
	timeline.Mark(ctx, phaseNamespaces)
	if !hostIPC {
		shm := filepath.Join(sb.Dir, "shm")
		if err := nspin.MountShm(shm, defaultShmSize); err != nil {
			return err
		}
		sb.Shm = shm
		rb.add(func(context.Context) error { return unmount(shm) })
	}
	for _, ns := range []struct{ kind, path string }{
		{specgen.SysctlNet, sb.NetNS}, {specgen.SysctlIPC, sb.IPCNS}, {specgen.SysctlUTS, sb.UTSNS},
	} {
		if len(sysctls[ns.kind]) == 0 {
			continue
		}
		files := map[string]string{}
		for name, value := range sysctls[ns.kind] {
			files[specgen.SysctlPath(name)] = value
		}
		if err := nspin.SetSysctls(ns.kind, ns.path, files); err != nil {
			return err
		}
	}
	timeline.Mark(ctx, phaseShm)
	return nil
}

// startInfra starts the pod's infra process, the init of its shared pid
// namespace: the monitor's own (startOwnInfra), or for a pod that asks for
// what that one cannot do, the sandbox image run as a container.
func (r *Runtime) startInfra(ctx context.Context, j *Job, sb *Sandbox) error {
	err := r.startOwnInfra(ctx, j, sb)
	if !errdefs.Is(err, errdefs.ErrNotImplemented) {
		return err
	}
	j.Logf("running the sandbox image as the infra process: %v", err)
	return r.startImageInfra(ctx, j, sb)
}

// startOwnInfra has the pod's monitor start the infra process itself
// (monitor.OpInfra): no image, snapshot, helper or Go start; its cgroup
// is made here. A pod whose sandbox asks for what that process cannot do
// (monitor.RenderInfraPlan) is ErrNotImplemented.
func (r *Runtime) startOwnInfra(ctx context.Context, j *Job, sb *Sandbox) (retErr error) {
	pod := r.specPod(sb)
	runtimeDefault, err := specgen.SandboxSeccompDefault(pod, r.o.Spec)
	if err != nil {
		return err
	}
	id := "infra-" + sb.ID
	c := &Container{ID: id, SandboxID: sb.ID, Name: id, State: ContainerCreated, CreatedAt: time.Now(),
		Bundle: filepath.Join(sb.Dir, "ctrs", id), Infra: true, Own: true,
		ConfigPB: mustMarshal(&runtimeapi.ContainerConfig{}), config: &runtimeapi.ContainerConfig{}}
	root := filepath.Join(c.Bundle, "rootfs")
	spec, err := specgen.InfraSpec(ctx, pod, root, specgen.OwnInfraImage, r.o.Spec)
	if err != nil {
		return err
	}
	if _, err := monitor.RenderInfraPlan(spec, runtimeDefault, root, nil); err != nil {
		return err
	}
	var rb rollback
	defer func() {
		if retErr != nil {
			rb.run(ctx)
		}
	}()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return errdefs.OS(err)
	}
	// Removes the cgroup too (its path is in config.json), then the bundle.
	rb.add(func(ctx context.Context) error { return r.releaseContainerFiles(ctx, c) })
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Bundle, "config.json"), data, 0o600); err != nil {
		return err
	}
	procs, err := execdrv.CreateCgroup(spec, id)
	if err != nil {
		return err
	}
	plan, err := monitor.RenderInfraPlan(spec, runtimeDefault, root, procs)
	if err == nil {
		err = monitor.WriteInfraPlan(c.Bundle, plan)
	}
	if err != nil {
		return err
	}
	j.Mark(phaseCgroup)
	mon, err := r.monitorFor(ctx, sb)
	if err != nil {
		return err
	}
	resp, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpInfra, ID: id, Bundle: c.Bundle})
	if err != nil {
		return err
	}
	rb.add(func(ctx context.Context) error {
		_, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpDelete, ID: id, Force: true})
		return err
	})
	j.Mark(phaseInfra)
	return r.recordInfra(j, sb, c, resp.Pid)
}

// recordInfra records a started infra process.
func (r *Runtime) recordInfra(j *Job, sb *Sandbox, c *Container, pid int) error {
	c.Pid, c.State, c.StartedAt = pid, ContainerRunning, time.Now()
	sb.InfraPid, sb.Infra = pid, c.ID
	if err := r.updateContainer(c, func(*Container) {}); err != nil {
		return err
	}
	r.mu.Lock()
	r.containers[c.ID] = c
	r.mu.Unlock()
	j.Logf("infra process %d", pid)
	return nil
}

// startImageInfra runs the sandbox image as the pod's infra process.
func (r *Runtime) startImageInfra(ctx context.Context, j *Job, sb *Sandbox) (retErr error) {
	img, err := r.o.Images.Get(ctx, r.o.SandboxImage)
	if errdefs.IsNotFound(err) {
		j.Logf("pulling sandbox image %s", r.o.SandboxImage)
		img, err = r.o.Images.Pull(ctx, r.o.SandboxImage, nil, j.Logf)
	}
	if err != nil {
		return fmt.Errorf("sandbox image %s: %w", r.o.SandboxImage, err)
	}
	j.Mark(phaseImage)
	id := "infra-" + sb.ID
	c := &Container{ID: id, SandboxID: sb.ID, Name: id, State: ContainerCreated, CreatedAt: time.Now(),
		ImageID: img.ID.String(), ImageRef: imageRef(img), ImageName: r.o.SandboxImage,
		Bundle: filepath.Join(sb.Dir, "ctrs", id), Snapshot: "ctr-" + id, Infra: true,
		ConfigPB: mustMarshal(&runtimeapi.ContainerConfig{}), config: &runtimeapi.ContainerConfig{}}
	var rb rollback
	defer func() {
		if retErr != nil {
			rb.run(ctx)
		}
	}()
	if _, err := r.prepareBundle(ctx, sb, c, img, &rb, func(rootfs, _ string) (*specs.Spec, error) {
		return specgen.InfraSpec(ctx, r.specPod(sb), rootfs, img.Config, r.o.Spec)
	}); err != nil {
		return err
	}
	mon, err := r.monitorFor(ctx, sb)
	if err != nil {
		return err
	}
	resp, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpCreate, ID: id, Bundle: c.Bundle})
	if err != nil {
		return err
	}
	j.Mark(phaseCreate)
	if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpStart, ID: id}); err != nil {
		mon.Call(ctx, &monitor.Request{Op: monitor.OpDelete, ID: id, Force: true})
		return err
	}
	j.Mark(phaseStart)
	return r.recordInfra(j, sb, c, resp.Pid)
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func (r *Runtime) netPod(sb *Sandbox) netdrv.Pod {
	cfg := sb.config
	p := netdrv.Pod{ID: sb.ID, Name: cfg.GetMetadata().GetName(), Namespace: cfg.GetMetadata().GetNamespace(),
		UID: cfg.GetMetadata().GetUid(), NetNS: sb.NetNS, Annotations: cfg.GetAnnotations()}
	for _, pm := range cfg.GetPortMappings() {
		p.Ports = append(p.Ports, netdrv.PortMapping{Protocol: pm.GetProtocol().String(),
			ContainerPort: pm.GetContainerPort(), HostPort: pm.GetHostPort(), HostIP: pm.GetHostIp()})
	}
	return p
}

func (r *Runtime) setupNetwork(ctx context.Context, j *Job, sb *Sandbox, rb *rollback) error {
	if r.o.Network == nil {
		return fmt.Errorf("pod networking is disabled; only host-network pods can run: %w", errdefs.ErrFailedPrecondition)
	}
	pod := r.netPod(sb)
	start := time.Now()
	res, err := r.o.Network.Setup(ctx, pod)
	if err != nil {
		return fmt.Errorf("setting up the pod network: %w", err)
	}
	rb.add(func(ctx context.Context) error { return r.o.Network.Teardown(ctx, pod) })
	sb.Network = r.o.Network.Name()
	for _, ip := range res.IPs {
		sb.IPs = append(sb.IPs, ip.String())
	}
	j.Logf("network %s: %v in %s", sb.Network, sb.IPs, time.Since(start).Round(time.Microsecond))
	return nil
}

// stopPod stops every container of the pod, its infra and monitor, and
// releases its network and namespaces. Unknown or stopped pods are fine.
func (r *Runtime) stopPod(ctx context.Context, j *Job, id string) (struct{}, error) {
	sb, err := r.getSandbox(id)
	if errdefs.IsNotFound(err) {
		return struct{}{}, nil
	}
	if err != nil {
		return struct{}{}, err
	}
	for _, c := range r.podContainers(sb.ID) {
		if err := r.killContainer(ctx, c, 0); err != nil {
			return struct{}{}, fmt.Errorf("stopping container %s: %w", c.ID, err)
		}
		if c.Infra {
			// The infra process belongs to the running pod only.
			if err := r.deleteContainer(ctx, c); err != nil {
				return struct{}{}, fmt.Errorf("removing the infra process: %w", err)
			}
			if err := r.updateSandbox(sb, func(sb *Sandbox) { sb.Infra, sb.InfraPid = "", 0 }); err != nil {
				return struct{}{}, err
			}
		}
	}
	if err := r.stopMonitor(ctx, sb); err != nil {
		return struct{}{}, err
	}
	if err := r.releasePod(ctx, sb); err != nil {
		return struct{}{}, err
	}
	if err := r.updateSandbox(sb, func(sb *Sandbox) { sb.State = SandboxNotReady }); err != nil {
		return struct{}{}, err
	}
	j.Logf("pod stopped")
	return struct{}{}, nil
}

// releasePod tears the network down and unpins the namespaces.
func (r *Runtime) releasePod(ctx context.Context, sb *Sandbox) error {
	v := sb.view()
	if v.Network != "" && r.o.Network != nil {
		if err := r.o.Network.Teardown(ctx, r.netPod(sb)); err != nil {
			return fmt.Errorf("tearing down the pod network: %w", err)
		}
	}
	var errs []error
	for _, p := range []string{v.NetNS, v.UTSNS, v.IPCNS, v.UserNS} {
		if p != "" {
			errs = append(errs, nspin.Unpin(p))
		}
	}
	for _, m := range []string{v.Shm, v.Files} {
		if m != "" {
			errs = append(errs, unmount(m))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return r.updateSandbox(sb, func(sb *Sandbox) { sb.IPs, sb.Network = nil, "" })
}

// stopMonitor ends the pod's monitor, if one runs.
func (r *Runtime) stopMonitor(ctx context.Context, sb *Sandbox) error {
	c := r.monitorClient(sb.ID)
	if c == nil {
		if _, err := os.Stat(filepath.Join(sb.Dir, monitor.SocketName)); err != nil {
			return nil
		}
		c = &monitor.Client{Socket: filepath.Join(sb.Dir, monitor.SocketName)}
	}
	_, err := c.Call(ctx, &monitor.Request{Op: monitor.OpShutdown})
	r.detachMonitor(sb.ID)
	r.reconcilePod(ctx, sb.ID)
	if err != nil && !errdefs.IsUnavailable(err) {
		return fmt.Errorf("stopping the pod's monitor: %w", err)
	}
	return nil
}

// removePod removes a pod and all its containers. Unknown pods are fine.
func (r *Runtime) removePod(ctx context.Context, j *Job, id string) (struct{}, error) {
	sb, err := r.getSandbox(id)
	if errdefs.IsNotFound(err) {
		return struct{}{}, nil
	}
	if err != nil {
		return struct{}{}, err
	}
	if _, err := r.stopPod(ctx, j, sb.ID); err != nil {
		return struct{}{}, err
	}
	for _, c := range r.podContainers(sb.ID) {
		if err := r.deleteContainer(ctx, c); err != nil {
			return struct{}{}, fmt.Errorf("removing container %s: %w", c.ID, err)
		}
	}
	if err := removePodDir(sb.Dir); err != nil {
		return struct{}{}, fmt.Errorf("removing pod %s: %w", sb.ID, err)
	}
	sb.mu.Lock()
	sb.removed = true
	err = r.store.delete(bucketSandboxes, sb.ID)
	sb.mu.Unlock()
	if err != nil {
		return struct{}{}, err
	}
	r.mu.Lock()
	delete(r.sandboxes, sb.ID)
	if r.podNames[sb.Name] == sb.ID {
		delete(r.podNames, sb.Name)
	}
	r.mu.Unlock()
	j.Logf("pod removed")
	return struct{}{}, nil
}

// PodFilter selects pods in ListPodSandbox.
type PodFilter = runtimeapi.PodSandboxFilter

func (r *Runtime) listPods(_ context.Context, _ *Job, f *PodFilter) ([]*Sandbox, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Sandbox
	for id, sb := range r.sandboxes {
		if f.GetId() != "" {
			full, _ := resolve(r.sandboxes, f.GetId())
			if full != id {
				continue
			}
		}
		v := sb.view()
		if st := f.GetState(); st != nil && st.GetState().String() != "SANDBOX_"+v.State {
			continue
		}
		if !labelsMatch(sb.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, sb)
	}
	return out, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// sandboxStatus renders the CRI status of a pod.
func (r *Runtime) sandboxStatus(sb *Sandbox) *runtimeapi.PodSandboxStatus {
	v := sb.view()
	cfg := v.config
	st := &runtimeapi.PodSandboxStatus{
		Id:             v.ID,
		Metadata:       cfg.GetMetadata(),
		State:          runtimeapi.PodSandboxState_SANDBOX_NOTREADY,
		CreatedAt:      v.CreatedAt.UnixNano(),
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: v.Handler,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{
			Options: nsOptions(cfg),
		}},
	}
	if v.State == SandboxReady {
		st.State = runtimeapi.PodSandboxState_SANDBOX_READY
	}
	st.Network = &runtimeapi.PodSandboxNetworkStatus{}
	for i, ip := range v.IPs {
		if i == 0 {
			st.Network.Ip = ip
		} else {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st
}

func unmount(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unmount", Path: path, Err: err}
	}
	return nil
}
