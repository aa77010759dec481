package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/imagestore"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// CreateContainerRequest asks for a container in a pod.
type CreateContainerRequest struct {
	PodID  string
	Config *runtimeapi.ContainerConfig
}

func ctrName(m *runtimeapi.ContainerMetadata, pm *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%s_%d", m.GetName(), pm.GetName(), pm.GetNamespace(), pm.GetUid(), m.GetAttempt())
}

// specPod describes the pod to the spec generator.
func (r *Runtime) specPod(sb *Sandbox) specgen.Pod {
	v := sb.view()
	files := v.Files
	if files == "" {
		files = v.Dir
	}
	p := specgen.Pod{ID: v.ID, Config: v.config, NetNS: v.NetNS, IPCNS: v.IPCNS, UTSNS: v.UTSNS, UserNS: v.UserNS,
		HostnameFile: filepath.Join(files, podHostname), HostsFile: filepath.Join(files, podHosts),
		ResolvConfFile: filepath.Join(files, podResolv), ShmPath: v.Shm}
	if v.InfraPid > 0 {
		p.PIDNS = fmt.Sprintf("/proc/%d/ns/pid", v.InfraPid)
	}
	return p
}

func (r *Runtime) createContainer(ctx context.Context, j *Job, req CreateContainerRequest) (_ *Container, retErr error) {
	sb, err := r.getSandbox(req.PodID)
	if err != nil {
		return nil, err
	}
	if sb.view().State != SandboxReady {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	cfg := req.Config
	if err := specgen.ValidateContainerConfig(cfg); err != nil {
		return nil, err
	}
	lp, err := specgen.LogPath(sb.config.GetLogDirectory(), cfg.GetLogPath())
	if err != nil {
		return nil, err
	}
	img, err := r.o.Images.Get(ctx, cfg.GetImage().GetImage())
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", cfg.GetImage().GetImage(), err)
	}
	name := ctrName(cfg.GetMetadata(), sb.config.GetMetadata())
	id := newID()
	r.mu.Lock()
	if other, ok := r.ctrNames[name]; ok {
		r.mu.Unlock()
		return nil, fmt.Errorf("container name %q is reserved by %s: %w", name, other, errdefs.ErrAlreadyExists)
	}
	r.ctrNames[name] = id
	r.mu.Unlock()
	var rb rollback
	rb.add(func(context.Context) error {
		r.mu.Lock()
		delete(r.ctrNames, name)
		r.mu.Unlock()
		return nil
	})
	defer func() {
		if retErr != nil {
			rb.run(ctx)
		}
	}()
	ctx = log.WithFields(ctx, map[string]any{log.FieldContainerID: id, log.FieldPodID: sb.ID})
	cfgPB, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	c := &Container{ID: id, SandboxID: sb.ID, Name: name, ConfigPB: cfgPB, State: ContainerCreated, CreatedAt: time.Now(),
		ImageID: img.ID.String(), ImageRef: imageRef(img), ImageName: statusImageName(cfg.GetImage(), img), LogPath: lp,
		Bundle: filepath.Join(sb.Dir, "ctrs", id), Snapshot: "ctr-" + id, StopSignal: img.Config.StopSignal, config: cfg}
	spec, err := r.prepareBundle(ctx, sb, c, img, &rb, func(rootfs, volumes string) (*specs.Spec, error) {
		imageMounts, err := r.mountImageVolumes(ctx, sb, c)
		if err != nil {
			return nil, err
		}
		sc := specgen.Container{ID: id, Config: cfg, Image: img.Config, ImageRef: c.ImageRef, Rootfs: rootfs,
			VolumeDir: volumes, ImageMounts: imageMounts}
		if sc.TargetPIDNS, err = r.targetPIDNS(ctx, cfg); err != nil {
			return nil, err
		}
		if err := populateVolumes(ctx, sc); err != nil {
			return nil, err
		}
		return specgen.ContainerSpec(ctx, r.specPod(sb), sc, r.o.Spec)
	})
	if err != nil {
		return nil, err
	}
	if u := spec.Process.User; true {
		uid, gid := int64(u.UID), int64(u.GID)
		c.UID, c.GID, c.Username = &uid, &gid, cfg.GetLinux().GetSecurityContext().GetRunAsUsername()
		for _, g := range u.AdditionalGids {
			c.Groups = append(c.Groups, int64(g))
		}
	}
	if lp != "" {
		if err := os.MkdirAll(filepath.Dir(lp), 0o755); err != nil {
			return nil, fmt.Errorf("log directory: %w", errdefs.OS(err))
		}
	}
	mon, err := r.monitorFor(ctx, sb)
	if err != nil {
		return nil, err
	}
	// The monitor may have made the container even when the call fails
	// (a deadline, a reset): the rollback deletes it either way, killing
	// its cgroup when the monitor cannot.
	rb.add(func(ctx context.Context) error {
		err := r.deleteThroughMonitor(ctx, mon, c)
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	})
	resp, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpCreate, ID: id, Bundle: c.Bundle, LogPath: lp,
		Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce(), Tty: cfg.GetTty()})
	if err != nil {
		return nil, fmt.Errorf("creating container: %w", err)
	}
	c.Pid = resp.Pid
	if err := r.updateContainer(c, func(*Container) {}); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.containers[id] = c
	r.mu.Unlock()
	r.emit(c, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	j.Logf("container %s created (pid %d)", name, c.Pid)
	return c, nil
}

// mountImageVolumes mounts a read-only view of the image of every image
// volume (CRI Mount.image) under the bundle.
func (r *Runtime) mountImageVolumes(ctx context.Context, sb *Sandbox, c *Container) (map[string]string, error) {
	var out map[string]string
	for i, m := range c.config.GetMounts() {
		if m.GetImage().GetImage() == "" {
			continue
		}
		img, err := r.o.Images.Get(ctx, m.GetImage().GetImage())
		if err != nil {
			return nil, fmt.Errorf("image volume %s: %w", m.GetContainerPath(), err)
		}
		key := fmt.Sprintf("%s-vol%d", c.Snapshot, i)
		mounts, err := r.o.Snapshotter.View(ctx, key, img.ChainID())
		if err != nil {
			return nil, fmt.Errorf("image volume %s: %w", m.GetContainerPath(), err)
		}
		// Recorded before it is mounted: the create's rollback
		// (releaseContainerFiles) unmounts and removes what is listed.
		dir := filepath.Join(c.Bundle, "imagevols", fmt.Sprint(i))
		c.mu.Lock()
		c.ImageVolumes = append(c.ImageVolumes, ImageVolume{Path: m.GetContainerPath(), Snapshot: key, Dir: dir, ImageID: img.ID.String()})
		c.mu.Unlock()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("image volume %s: %w", m.GetContainerPath(), errdefs.OS(err))
		}
		if err := r.mountSnapshot(sb, mounts, dir); err != nil {
			return nil, fmt.Errorf("image volume %s: %w", m.GetContainerPath(), err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[filepath.Clean(m.GetContainerPath())] = dir
	}
	return out, nil
}

// targetPIDNS is the pid namespace of the container a TARGET-mode
// container shares.
func (r *Runtime) targetPIDNS(ctx context.Context, cfg *runtimeapi.ContainerConfig) (string, error) {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if ns.GetPid() != runtimeapi.NamespaceMode_TARGET {
		return "", nil
	}
	t, err := r.getContainer(ns.GetTargetId())
	if err != nil {
		return "", fmt.Errorf("pid namespace target: %w", err)
	}
	r.refresh(ctx, t)
	v := t.view()
	if v.State != ContainerRunning && v.State != ContainerCreated || v.Pid <= 0 {
		return "", fmt.Errorf("pid namespace target %s is not running: %w", t.ID, errdefs.ErrFailedPrecondition)
	}
	return fmt.Sprintf("/proc/%d/ns/pid", v.Pid), nil
}

// populateVolumes creates the directories of the image's VOLUMEs and
// copies into them what the image has at those paths, as Docker does.
func populateVolumes(ctx context.Context, c specgen.Container) error {
	vols, err := specgen.ImageVolumes(c)
	if err != nil {
		return err
	}
	for _, v := range vols {
		src, err := securejoin.SecureJoin(c.Rootfs, v.Destination)
		if err != nil {
			return fmt.Errorf("image volume %s: %v: %w", v.Destination, err, errdefs.ErrInvalidArgument)
		}
		if fi, err := os.Lstat(src); err == nil && fi.IsDir() {
			if err := snapshot.Copy(ctx, src, v.Source); err != nil {
				return fmt.Errorf("image volume %s: %w", v.Destination, err)
			}
			continue
		}
		if err := os.MkdirAll(v.Source, 0o755); err != nil {
			return fmt.Errorf("image volume %s: %w", v.Destination, errdefs.OS(err))
		}
	}
	return nil
}

// statusImageName is the image a container's status names: the image as the
// user wrote it in the pod (kubelet sends it as UserSpecifiedImage and the
// image ID as Image), else a tag of the image when Image is its ID, else
// Image. kubelet shows it as the container status' image, and the node e2e
// specs that update a container's image wait for the new name there.
func statusImageName(spec *runtimeapi.ImageSpec, img *imagestore.Image) string {
	if u := spec.GetUserSpecifiedImage(); u != "" {
		return u
	}
	name := spec.GetImage()
	if (name == img.ID.String() || name == img.ID.Encoded()) && len(img.RepoTags) > 0 {
		return img.RepoTags[0]
	}
	return name
}

func imageRef(img *imagestore.Image) string {
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return img.ID.String()
}

// prepareBundle makes the container's writable snapshot (the executor
// creates mount points in it even when the spec's root is read-only),
// mounts it as the bundle's rootfs, generates the spec and writes
// config.json.
func (r *Runtime) prepareBundle(ctx context.Context, sb *Sandbox, c *Container, img *imagestore.Image, rb *rollback,
	gen func(rootfs, volumes string) (*specs.Spec, error)) (*specs.Spec, error) {
	rootfs := filepath.Join(c.Bundle, "rootfs")
	// Image VOLUME data is the container's own data (a database's files):
	// on disk under the root, not on the state tmpfs.
	volumes := r.volumeDir(c.ID)
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, errdefs.OS(err)
	}
	// One step undoes all of it in order (unmount, then remove), and
	// removes nothing when an unmount fails.
	rb.add(func(ctx context.Context) error { return r.releaseContainerFiles(ctx, c) })
	mounts, err := r.o.Snapshotter.Prepare(ctx, c.Snapshot, img.ChainID())
	if err != nil {
		return nil, fmt.Errorf("preparing the root filesystem: %w", err)
	}
	if err := r.mountSnapshot(sb, mounts, rootfs); err != nil {
		return nil, fmt.Errorf("mounting the root filesystem: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(volumes), 0o700); err != nil {
		return nil, errdefs.OS(err)
	}
	if err := os.Mkdir(volumes, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, errdefs.OS(err)
	}
	spec, err := gen(rootfs, volumes)
	if err != nil {
		return nil, err
	}
	spec.Root = &specs.Root{Path: rootfs, Readonly: spec.Root != nil && spec.Root.Readonly}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.Bundle, "config.json"), data, 0o600); err != nil {
		return nil, err
	}
	return spec, nil
}

// startInfra runs the pause image as the pod's infra process, the init of
// its shared pid namespace.
func (r *Runtime) startInfra(ctx context.Context, j *Job, sb *Sandbox) (retErr error) {
	img, err := r.o.Images.Get(ctx, r.o.SandboxImage)
	if errdefs.IsNotFound(err) {
		j.Logf("pulling sandbox image %s", r.o.SandboxImage)
		img, err = r.o.Images.Pull(ctx, r.o.SandboxImage, nil, j.Logf)
	}
	if err != nil {
		return fmt.Errorf("sandbox image %s: %w", r.o.SandboxImage, err)
	}
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
	if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpStart, ID: id}); err != nil {
		mon.Call(ctx, &monitor.Request{Op: monitor.OpDelete, ID: id, Force: true})
		return err
	}
	c.Pid, c.State, c.StartedAt = resp.Pid, ContainerRunning, time.Now()
	sb.InfraPid, sb.Infra = resp.Pid, id
	if err := r.updateContainer(c, func(*Container) {}); err != nil {
		return err
	}
	r.mu.Lock()
	r.containers[id] = c
	r.mu.Unlock()
	j.Logf("infra process %d", resp.Pid)
	return nil
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// monitorOf returns the client of the container's pod monitor.
func (r *Runtime) monitorOf(c *Container) (*monitor.Client, error) {
	if m := r.monitorClient(c.SandboxID); m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("the monitor of pod %s is not running: %w", c.SandboxID, errdefs.ErrFailedPrecondition)
}

func (r *Runtime) startContainer(ctx context.Context, j *Job, id string) (struct{}, error) {
	c, err := r.getContainer(id)
	if err != nil {
		return struct{}{}, err
	}
	r.refresh(ctx, c)
	if st := c.view().State; st != ContainerCreated {
		return struct{}{}, fmt.Errorf("container %s is %s, not created: %w", c.ID, st, errdefs.ErrFailedPrecondition)
	}
	mon, err := r.monitorOf(c)
	if err != nil {
		return struct{}{}, err
	}
	if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpStart, ID: c.ID}); err != nil {
		// The start may have happened before the call failed (a deadline,
		// a reset): ask the runtime what the container is doing.
		if !r.started(ctx, c) {
			return struct{}{}, fmt.Errorf("starting container: %w", err)
		}
	}
	if err := r.updateContainer(c, func(c *Container) {
		if c.State == ContainerCreated {
			c.State = ContainerRunning
		}
		if c.StartedAt.IsZero() {
			c.StartedAt = time.Now()
		}
	}); err != nil {
		return struct{}{}, err
	}
	r.emit(c, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	r.refresh(ctx, c) // it may have exited already
	j.Logf("started")
	return struct{}{}, nil
}

// started reports whether the runtime shows c running or already exited
// after a start.
func (r *Runtime) started(ctx context.Context, c *Container) bool {
	drv, err := r.podDriver(c.SandboxID)
	if err != nil {
		return false
	}
	st, err := drv.State(ctx, c.ID)
	return err == nil && (st.Status == execdrv.StatusRunning || st.Status == execdrv.StatusStopped)
}

// StopContainerRequest asks to stop a container within Timeout.
type StopContainerRequest struct {
	ID      string
	Timeout time.Duration
}

func (r *Runtime) stopContainer(ctx context.Context, j *Job, req StopContainerRequest) (struct{}, error) {
	c, err := r.getContainer(req.ID)
	if errdefs.IsNotFound(err) {
		return struct{}{}, nil
	}
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.killContainer(ctx, c, req.Timeout)
}

// killContainer sends the stop signal, waits up to timeout, then kills
// every process of the container and waits for the exit.
func (r *Runtime) killContainer(ctx context.Context, c *Container, timeout time.Duration) error {
	r.refresh(ctx, c)
	v := c.view()
	if v.State != ContainerRunning && v.State != ContainerCreated {
		return nil
	}
	mon, err := r.monitorOf(c)
	if err == nil {
		err = r.killThrough(ctx, mon, c, v.State, v.StopSignal, timeout)
	}
	if err != nil && (mon == nil || monitor.IsGone(err)) {
		// No monitor: kill through the runtime and record the exit.
		r.monitorGone(ctx, c.SandboxID)
		return nil
	}
	return err
}

func (r *Runtime) killThrough(ctx context.Context, mon *monitor.Client, c *Container, state, stopSig string, timeout time.Duration) error {
	if timeout > 0 && state == ContainerRunning {
		sig := stopSignal(stopSig)
		if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpKill, ID: c.ID, Signal: int(sig)}); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		if r.waitExited(ctx, c, timeout) {
			return nil
		}
	}
	if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpKill, ID: c.ID, Signal: int(unix.SIGKILL), All: true}); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	if !r.waitExited(ctx, c, 30*time.Second) {
		return fmt.Errorf("container %s did not exit after SIGKILL: %w", c.ID, errdefs.ErrUnavailable)
	}
	return nil
}

// waitExited waits until the container is recorded exited.
func (r *Runtime) waitExited(ctx context.Context, c *Container, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		r.refresh(ctx, c)
		if c.view().State == ContainerExited {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(delay)
	}
}

func stopSignal(s string) unix.Signal {
	if s == "" {
		return unix.SIGTERM
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig
	}
	// Real-time signals: RTMIN+n, RTMAX-n (systemd images stop on RTMIN+3).
	var n int
	if _, err := fmt.Sscanf(name, "RTMIN+%d", &n); err == nil && n >= 0 && 34+n <= 64 {
		return unix.Signal(34 + n)
	}
	if _, err := fmt.Sscanf(name, "RTMAX-%d", &n); err == nil && n >= 0 && 64-n >= 34 {
		return unix.Signal(64 - n)
	}
	switch name {
	case "RTMIN":
		return unix.Signal(34)
	case "RTMAX":
		return unix.Signal(64)
	}
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && n > 0 && n < 65 {
		return unix.Signal(n)
	}
	return unix.SIGTERM
}

func (r *Runtime) removeContainer(ctx context.Context, j *Job, id string) (struct{}, error) {
	c, err := r.getContainer(id)
	if errdefs.IsNotFound(err) {
		return struct{}{}, nil
	}
	if err != nil {
		return struct{}{}, err
	}
	if err := r.killContainer(ctx, c, 0); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.deleteContainer(ctx, c)
}

// deleteContainer removes an exited container and everything it had. A
// container whose process may still run keeps its record: the remove
// fails and can be retried.
func (r *Runtime) deleteContainer(ctx context.Context, c *Container) error {
	deleted := false
	if mon := r.monitorClient(c.SandboxID); mon != nil {
		err := r.deleteThroughMonitor(ctx, mon, c)
		switch {
		case err == nil:
			deleted = true
		case errdefs.IsNotFound(err), monitor.IsGone(err):
			// The monitor does not hold it, or is not running.
		default:
			return err
		}
	}
	if !deleted {
		// No monitor (the pod is stopped, or it died): remove the
		// container's runtime state and cgroups directly.
		drv, err := r.podDriver(c.SandboxID)
		if err != nil {
			return fmt.Errorf("deleting container %s: %w", c.ID, err)
		}
		if err := drv.Delete(ctx, c.ID, true); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("deleting container %s: %w", c.ID, err)
		}
	}
	if err := r.releaseContainerFiles(ctx, c); err != nil {
		return err
	}
	if err := r.forgetContainer(c); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.containers, c.ID)
	if r.ctrNames[c.Name] == c.ID {
		delete(r.ctrNames, c.Name)
	}
	r.mu.Unlock()
	r.emit(c, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}

// deleteExitWait bounds the wait for a container's exit after its cgroup
// was killed.
var deleteExitWait = 10 * time.Second

// deleteThroughMonitor has the monitor delete c. When the monitor is up
// but cannot confirm the container's process is gone (it "did not exit
// after delete", or the call failed half way), every process in the
// container's cgroup is killed, the exit awaited and the delete retried;
// if the process may still run, the error is returned.
func (r *Runtime) deleteThroughMonitor(ctx context.Context, mon *monitor.Client, c *Container) error {
	req := &monitor.Request{Op: monitor.OpDelete, ID: c.ID, Force: true}
	_, err := mon.Call(ctx, req)
	if err == nil || errdefs.IsNotFound(err) || monitor.IsGone(err) || ctx.Err() != nil {
		return err
	}
	l := log.G(ctx).WithField(log.FieldContainerID, c.ID)
	l.WithError(err).Warn("the monitor could not delete the container; killing its cgroup")
	if kerr := execdrv.KillCgroup(c.view().Bundle, c.ID); kerr != nil {
		l.WithError(kerr).Warn("killing the container's cgroup")
	}
	if !r.waitMonitorExit(ctx, mon, c.ID) {
		return fmt.Errorf("container %s may still be running; its record is kept: %w", c.ID, err)
	}
	if _, err := mon.Call(ctx, req); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: %w", c.ID, err)
	}
	return nil
}

// waitMonitorExit waits until the monitor reports the container's init
// reaped (or no longer holds the container).
func (r *Runtime) waitMonitorExit(ctx context.Context, mon *monitor.Client, id string) bool {
	deadline := time.Now().Add(deleteExitWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		st, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpState})
		if err == nil {
			running := false
			for _, mc := range st.Containers {
				if mc.ID == id && mc.Exited == nil {
					running = true
				}
			}
			if !running {
				return true
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(delay)
	}
}

// ExecSyncRequest runs a command in a container.
type ExecSyncRequest struct {
	ID      string
	Cmd     []string
	Timeout time.Duration
}

// ExecSyncResult is the command's output.
type ExecSyncResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

func (r *Runtime) execSync(ctx context.Context, j *Job, req ExecSyncRequest) (*ExecSyncResult, error) {
	c, err := r.getContainer(req.ID)
	if err != nil {
		return nil, err
	}
	if len(req.Cmd) == 0 {
		return nil, fmt.Errorf("exec without a command: %w", errdefs.ErrInvalidArgument)
	}
	r.refresh(ctx, c)
	if c.view().State != ContainerRunning {
		return nil, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	proc, err := execProcess(c.Bundle, req.Cmd)
	if err != nil {
		return nil, err
	}
	mon, err := r.monitorOf(c)
	if err != nil {
		return nil, err
	}
	resp, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpExecSync, ID: c.ID, Process: proc, Timeout: req.Timeout})
	if err != nil {
		return nil, err
	}
	if resp.Truncated {
		j.Logf("output truncated at 16 MiB per stream")
	}
	return &ExecSyncResult{Stdout: resp.Stdout, Stderr: resp.Stderr, ExitCode: int32(resp.ExitCode)}, nil
}

// execProcess is the container's process with another command.
func execProcess(bundle string, cmd []string) (*specs.Process, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("container config: %v: %w", err, errdefs.ErrDataLoss)
	}
	p := *spec.Process
	p.Args = cmd
	p.Terminal = false
	p.ConsoleSize = nil
	return &p, nil
}

// UpdateResourcesRequest changes a container's resources.
type UpdateResourcesRequest struct {
	ID        string
	Resources *runtimeapi.LinuxContainerResources
}

func (r *Runtime) updateResources(ctx context.Context, j *Job, req UpdateResourcesRequest) (struct{}, error) {
	c, err := r.getContainer(req.ID)
	if err != nil {
		return struct{}{}, err
	}
	res, err := specgen.Resources(ctx, req.Resources, r.o.Spec)
	if err != nil {
		return struct{}{}, err
	}
	r.refresh(ctx, c)
	if st := c.view().State; st == ContainerRunning || st == ContainerCreated {
		mon, err := r.monitorOf(c)
		if err != nil {
			return struct{}{}, err
		}
		if _, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpUpdate, ID: c.ID, Resources: res}); err != nil {
			return struct{}{}, err
		}
	}
	pb, err := proto.Marshal(req.Resources)
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.updateContainer(c, func(c *Container) { c.ResourcesPB = pb })
}

func (r *Runtime) reopenLog(ctx context.Context, j *Job, id string) (struct{}, error) {
	c, err := r.getContainer(id)
	if err != nil {
		return struct{}{}, err
	}
	r.refresh(ctx, c)
	if c.view().State != ContainerRunning {
		return struct{}{}, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	mon, err := r.monitorOf(c)
	if err != nil {
		return struct{}{}, err
	}
	_, err = mon.Call(ctx, &monitor.Request{Op: monitor.OpReopenLog, ID: c.ID})
	return struct{}{}, err
}
