package engine

// Container create: CreateContainer builds the bundle (snapshot, image
// volumes, spec) and has the pod's monitor create the container.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/imagestore"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/timeline"
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
	// The container's cgroup join comes after the snapshot, the spec and
	// the plan: warm its lock meanwhile.
	r.warmer.Warm()
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
	j.Mark(phaseValidate)
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
	direct, err := r.prepareDirect(ctx, j, sb, c, spec, mon, &rb)
	if err != nil {
		return nil, err
	}
	mreq := &monitor.Request{Op: monitor.OpCreate, ID: id, Bundle: c.Bundle, LogPath: lp,
		Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce(), Tty: cfg.GetTty(), Direct: direct != nil}
	resp, err := mon.Call(ctx, mreq)
	if direct != nil && errors.Is(err, errdefs.ErrNotImplemented) {
		// This monitor cannot start an init itself: its helper creates.
		log.G(ctx).WithError(err).Warn("the pod's monitor cannot create directly; its helper creates")
		mon.SetDirect(false)
		if err = direct.Delete(ctx, id, true); err == nil {
			direct, mreq.Direct = nil, false
			resp, err = mon.Call(ctx, mreq)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating container: %w", err)
	}
	markMonitorCall(j, resp, phaseLibctCreate)
	if direct != nil {
		if err := direct.CommitDirect(id, resp.Pid); err != nil {
			return nil, fmt.Errorf("creating container: %w", err)
		}
		j.Mark(phaseLibctCommit)
	}
	c.Pid = resp.Pid
	if err := r.updateContainer(c, func(*Container) {}); err != nil {
		return nil, err
	}
	j.Mark(phaseRecord)
	c.mu.Lock()
	c.created = j.Timeline()
	c.mu.Unlock()
	r.mu.Lock()
	r.containers[id] = c
	r.mu.Unlock()
	r.emit(c, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	j.Logf("container %s created (pid %d)", name, c.Pid)
	return c, nil
}

// prepareDirect has libct prepare container c for its pod's monitor to
// start the init itself, without a helper (Request.Direct), when the pod
// runs on shim's own driver and its monitor can: the driver, or nil (the
// helper creates it: a terminal, hooks, a user namespace, idmapped
// mounts, another runtime, a monitor from an older binary).
func (r *Runtime) prepareDirect(ctx context.Context, j *Job, sb *Sandbox, c *Container, spec *specs.Spec,
	mon *monitor.Client, rb *rollback) (*execdrv.Native, error) {
	if c.config.GetTty() || !mon.Direct() {
		return nil, nil
	}
	drv, err := r.podDriver(sb.ID)
	if err != nil {
		return nil, err
	}
	nd, ok := drv.(*execdrv.Native)
	if !ok {
		return nil, nil
	}
	if ok, err := nd.PrepareDirect(ctx, c.ID, c.Bundle, spec, mon.CInit()); err != nil || !ok {
		return nil, err
	}
	// Until the monitor has the init, the monitor's delete (the rollback
	// added before) does not reach what libct made.
	rb.add(func(ctx context.Context) error {
		if err := nd.Delete(ctx, c.ID, true); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	})
	j.Mark(phaseLibctPrepare)
	return nd, nil
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
			return fmt.Errorf("image volume %s: %w: %w", v.Destination, err, errdefs.ErrInvalidArgument)
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
	timeline.Mark(ctx, phaseSnapshot)
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
	timeline.Mark(ctx, phaseSpec)
	return spec, nil
}
