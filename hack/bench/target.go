package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// errUnsupported marks an endpoint that does not implement what a mode needs
// (codes.Unimplemented); the command then exits with status 3.
var errUnsupported = errors.New("not implemented by the endpoint")

// target is one CRI endpoint under measurement.
type target struct {
	Label     string // "A" or "B"
	Name      string // as printed; defaults to the runtime name Version reports
	Endpoint  string
	DaemonPID int
	Procs     procSelector

	RuntimeName    string
	RuntimeVersion string

	running []pod // pods a mode keeps across rounds (stats)

	conn *grpc.ClientConn
	rt   runtimeapi.RuntimeServiceClient
	img  runtimeapi.ImageServiceClient

	execPod *pod // the exec modes' pod
}

// grpcTarget turns "unix:///path" or "/path" into a gRPC target.
func grpcTarget(endpoint string) (string, error) {
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		if !strings.HasPrefix(endpoint, "unix:///") {
			return "", fmt.Errorf("endpoint %q: want unix:///absolute/path", endpoint)
		}
		return endpoint, nil
	case strings.HasPrefix(endpoint, "/"):
		return "unix://" + endpoint, nil
	case strings.HasPrefix(endpoint, "tcp://"):
		return "dns:///" + strings.TrimPrefix(endpoint, "tcp://"), nil
	}
	return "", fmt.Errorf("endpoint %q: want unix:///path, /path or tcp://host:port", endpoint)
}

// connect dials the endpoint and asks Version, so a dead endpoint fails here.
func (t *target) connect(ctx context.Context, timeout time.Duration) error {
	addr, err := grpcTarget(t.Endpoint)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return fmt.Errorf("%s: %w", t.Endpoint, err)
	}
	t.conn = conn
	t.rt = runtimeapi.NewRuntimeServiceClient(conn)
	t.img = runtimeapi.NewImageServiceClient(conn)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := t.rt.Version(cctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("%s: Version: %w", t.Endpoint, err)
	}
	t.RuntimeName, t.RuntimeVersion = v.RuntimeName, v.RuntimeVersion
	if t.Name == "" {
		t.Name = v.RuntimeName
	}
	return nil
}

func (t *target) close() {
	if t.conn != nil {
		t.conn.Close()
	}
}

// wrap names the target and the call in an error, and turns
// codes.Unimplemented into errUnsupported.
func (t *target) wrap(call string, err error) error {
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.Unimplemented {
		return fmt.Errorf("%s: %s: %w (%v)", t.Name, call, errUnsupported, err)
	}
	return fmt.Errorf("%s: %s: %w", t.Name, call, err)
}

// removeImage removes ref; a missing image is fine.
func (t *target) removeImage(ctx context.Context, ref string) error {
	_, err := t.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if status.Code(err) == codes.NotFound {
		err = nil
	}
	return t.wrap("RemoveImage "+ref, err)
}

// hasImage reports whether ImageStatus finds ref.
func (t *target) hasImage(ctx context.Context, ref string) (bool, error) {
	r, err := t.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, t.wrap("ImageStatus "+ref, err)
	}
	return r.GetImage() != nil, nil
}

func (t *target) pullImage(ctx context.Context, ref string) error {
	_, err := t.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return t.wrap("PullImage "+ref, err)
}

// ensureImage pulls ref unless the endpoint has it.
func (t *target) ensureImage(ctx context.Context, ref string) error {
	ok, err := t.hasImage(ctx, ref)
	if err != nil || ok {
		return err
	}
	return t.pullImage(ctx, ref)
}

// podCount is the number of sandboxes the endpoint lists; -1 when it has no
// RuntimeService yet.
func (t *target) podCount(ctx context.Context) (int, error) {
	r, err := t.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if status.Code(err) == codes.Unimplemented {
		return -1, nil
	}
	if err != nil {
		return 0, t.wrap("ListPodSandbox", err)
	}
	return len(r.GetItems()), nil
}

// podOptions is what every benchmark pod looks like.
type podOptions struct {
	Image          string // the container's image; runs "sleep 3600"
	PauseImage     string // pre-pulled for runtimes that need one
	LogRoot        string // pod log directories go below it
	CgroupParent   string
	HostNetwork    bool
	SharedPID      bool // one PID namespace per pod, not per container
	RuntimeHandler string
	Namespace      string
}

// pod is a started benchmark pod.
type pod struct {
	ID     string
	CtrID  string
	LogDir string
	config *runtimeapi.PodSandboxConfig
}

// startTimes are the durations of the three calls that start a pod.
type startTimes struct {
	RunPod, Create, Start time.Duration
}

func (s startTimes) total() time.Duration { return s.RunPod + s.Create + s.Start }

func randomID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// startPod runs RunPodSandbox, CreateContainer and StartContainer, timing
// each. On failure whatever was created is removed again.
func (t *target) startPod(ctx context.Context, o podOptions, name string) (p pod, st startTimes, retErr error) {
	uid := randomID()
	p.LogDir = filepath.Join(o.LogRoot, o.Namespace+"_"+name+"_"+uid)
	if err := os.MkdirAll(p.LogDir, 0o755); err != nil {
		return p, st, err
	}
	netMode := runtimeapi.NamespaceMode_POD
	if o.HostNetwork {
		netMode = runtimeapi.NamespaceMode_NODE
	}
	pidMode := runtimeapi.NamespaceMode_CONTAINER
	if o.SharedPID {
		pidMode = runtimeapi.NamespaceMode_POD
	}
	p.config = &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: uid, Namespace: o.Namespace},
		Hostname:     "bench",
		LogDirectory: p.LogDir,
		Labels:       map[string]string{"shim-bench": "1"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: o.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: netMode, Pid: pidMode, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
	defer func() {
		if retErr != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := t.removePod(cctx, p); err != nil {
				fmt.Fprintf(os.Stderr, "bench: cleanup after failed start: %v\n", err)
			}
		}
	}()

	t0 := time.Now()
	r, err := t.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: p.config, RuntimeHandler: o.RuntimeHandler})
	st.RunPod = time.Since(t0)
	if err != nil {
		return p, st, t.wrap("RunPodSandbox", err)
	}
	p.ID = r.GetPodSandboxId()

	t0 = time.Now()
	c, err := t.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.ID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
			Image:    &runtimeapi.ImageSpec{Image: o.Image},
			Command:  []string{"sleep", "3600"},
			LogPath:  "sleep_0.log",
			Labels:   map[string]string{"shim-bench": "1"},
			Linux: &runtimeapi.LinuxContainerConfig{
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					NamespaceOptions: p.config.Linux.SecurityContext.NamespaceOptions,
				},
			},
		},
		SandboxConfig: p.config,
	})
	st.Create = time.Since(t0)
	if err != nil {
		return p, st, t.wrap("CreateContainer", err)
	}
	p.CtrID = c.GetContainerId()

	t0 = time.Now()
	_, err = t.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.CtrID})
	st.Start = time.Since(t0)
	if err != nil {
		return p, st, t.wrap("StartContainer", err)
	}
	return p, st, nil
}

// checkRunning fails unless the pod's container is RUNNING.
func (t *target) checkRunning(ctx context.Context, p pod) error {
	r, err := t.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: p.CtrID})
	if err != nil {
		return t.wrap("ContainerStatus", err)
	}
	if s := r.GetStatus().GetState(); s != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("%s: container %s of pod %s is %s, not running (%s: %s)", t.Name, p.CtrID, p.ID, s,
			r.GetStatus().GetReason(), r.GetStatus().GetMessage())
	}
	return nil
}

// removePod stops and removes the pod's container and the pod, then its log
// directory. Every step runs even when an earlier one failed.
func (t *target) removePod(ctx context.Context, p pod) error {
	var errs []error
	if p.CtrID != "" {
		if _, err := t.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: p.CtrID}); err != nil {
			errs = append(errs, t.wrap("StopContainer", err))
		}
		if _, err := t.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: p.CtrID}); err != nil {
			errs = append(errs, t.wrap("RemoveContainer", err))
		}
	}
	if p.ID != "" {
		if _, err := t.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.ID}); err != nil {
			errs = append(errs, t.wrap("StopPodSandbox", err))
		}
		if _, err := t.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.ID}); err != nil {
			errs = append(errs, t.wrap("RemovePodSandbox", err))
		}
	}
	if p.LogDir != "" {
		if err := os.RemoveAll(p.LogDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
