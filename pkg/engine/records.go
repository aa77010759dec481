package engine

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/timeline"
)

var (
	bucketSandboxes  = []byte("sandboxes.v1")
	bucketContainers = []byte("containers.v1")
)

// Sandbox states, as CRI names them.
const (
	SandboxReady    = "READY"
	SandboxNotReady = "NOTREADY"
)

// Container states, as CRI names them.
const (
	ContainerCreated = "CREATED"
	ContainerRunning = "RUNNING"
	ContainerExited  = "EXITED"
	ContainerUnknown = "UNKNOWN"
)

// Sandbox is a pod sandbox's record, persisted in meta.db.
type Sandbox struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"` // reserved name: name_namespace_uid_attempt
	ConfigPB  []byte    `json:"config"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"createdAt"`
	Handler   string    `json:"runtimeHandler,omitempty"`
	Dir       string    `json:"dir"`
	NetNS     string    `json:"netns,omitempty"`
	IPCNS     string    `json:"ipcns,omitempty"`
	UTSNS     string    `json:"utsns,omitempty"`
	UserNS    string    `json:"userns,omitempty"` // pinned user namespace (hostUsers: false)
	Shm       string    `json:"shm,omitempty"`    // mounted tmpfs for /dev/shm
	Files     string    `json:"files,omitempty"`  // mounted tmpfs with the pod files ("": in Dir, an older record)
	Network   string    `json:"network,omitempty"`
	IPs       []string  `json:"ips,omitempty"`
	Infra     string    `json:"infra,omitempty"` // infra container id (shared pid namespace)
	InfraPid  int       `json:"infraPid,omitempty"`
	Monitor   bool      `json:"monitor,omitempty"` // a monitor was started for the pod
	// ResourcesPB is the pod-level resources kubelet last gave with
	// UpdatePodSandboxResources (an UpdatePodSandboxResourcesRequest).
	ResourcesPB []byte `json:"podResources,omitempty"`

	config  *runtimeapi.PodSandboxConfig
	mu      sync.Mutex // guards State, IPs and the fields jobs change
	removed bool
	// timeline is the phases of its run_pod job: in memory only (a
	// restarted daemon has none).
	timeline *timeline.Timeline
	// monitorStarted waits for the monitor RunPodSandbox starts in the
	// background (set before the pod is published; nil after a restart).
	monitorStarted func() error
}

// Config is the pod's CRI config.
func (s *Sandbox) Config() *runtimeapi.PodSandboxConfig { return s.config }

// Container is a container's record.
type Container struct {
	ID         string    `json:"id"`
	SandboxID  string    `json:"sandboxId"`
	Name       string    `json:"name"` // reserved name
	ConfigPB   []byte    `json:"config"`
	State      string    `json:"state"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	ExitCode   int32     `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	Pid        int       `json:"pid,omitempty"`
	ImageID    string    `json:"imageId"`
	ImageRef   string    `json:"imageRef"` // repo digest, or the id
	ImageName  string    `json:"imageName"`
	LogPath    string    `json:"logPath,omitempty"`
	Bundle     string    `json:"bundle"`
	Snapshot   string    `json:"snapshot"`
	StopSignal string    `json:"stopSignal,omitempty"`
	UID        *int64    `json:"uid,omitempty"`
	GID        *int64    `json:"gid,omitempty"`
	Groups     []int64   `json:"groups,omitempty"`
	Username   string    `json:"username,omitempty"`
	Infra      bool      `json:"infra,omitempty"` // the pod's infra process, not a CRI container
	// Own: an infra process the monitor started itself (no image, no
	// snapshot, no runtime state); its cgroup is the daemon's.
	Own bool `json:"own,omitempty"`
	// ImageVolumes are the read-only snapshots mounted for image volumes,
	// by container path: snapshot key and the image id.
	ImageVolumes []ImageVolume `json:"imageVolumes,omitempty"`
	// ResourcesPB is the current resources (after UpdateContainerResources).
	ResourcesPB []byte `json:"resources,omitempty"`

	config  *runtimeapi.ContainerConfig
	mu      sync.Mutex // guards the state fields, which exits change outside jobs
	removed bool       // deleted: no more writes
	// starting: a start job runs; an exit seen meanwhile sets stopPending
	// and the start emits CONTAINER_STOPPED after CONTAINER_STARTED.
	starting, stopPending bool
	// The phases of its create and start jobs: in memory only (a
	// restarted daemon has none).
	created, started *timeline.Timeline
}

// updateContainer applies fn to c under its lock and persists it, in order
// with every other update of c; a removed container is not written back.
func (r *Runtime) updateContainer(c *Container, fn func(c *Container)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	fn(c)
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return r.store.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContainers).Put([]byte(c.ID), data)
	})
}

// forgetContainer deletes c's record; later updates are dropped.
func (r *Runtime) forgetContainer(c *Container) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = true
	return r.store.delete(bucketContainers, c.ID)
}

// view returns a copy of c's fields, consistent under its lock.
func (c *Container) view() Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Container{
		ID: c.ID, SandboxID: c.SandboxID, Name: c.Name, ConfigPB: c.ConfigPB, State: c.State,
		CreatedAt: c.CreatedAt, StartedAt: c.StartedAt, FinishedAt: c.FinishedAt, ExitCode: c.ExitCode,
		Reason: c.Reason, Message: c.Message, Pid: c.Pid, ImageID: c.ImageID, ImageRef: c.ImageRef,
		ImageName: c.ImageName, LogPath: c.LogPath, Bundle: c.Bundle, Snapshot: c.Snapshot,
		StopSignal: c.StopSignal, UID: c.UID, GID: c.GID, Groups: c.Groups, Username: c.Username,
		Infra: c.Infra, Own: c.Own, ResourcesPB: c.ResourcesPB, ImageVolumes: c.ImageVolumes, config: c.config,
	}
}

func (r *Runtime) updateSandbox(sb *Sandbox, fn func(sb *Sandbox)) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.removed {
		return nil
	}
	fn(sb)
	data, err := json.Marshal(sb)
	if err != nil {
		return err
	}
	return r.store.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSandboxes).Put([]byte(sb.ID), data)
	})
}

func (s *Sandbox) view() Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Sandbox{
		ID: s.ID, Name: s.Name, ConfigPB: s.ConfigPB, State: s.State, CreatedAt: s.CreatedAt, Handler: s.Handler,
		Dir: s.Dir, NetNS: s.NetNS, IPCNS: s.IPCNS, UTSNS: s.UTSNS, UserNS: s.UserNS, Shm: s.Shm, Files: s.Files, Network: s.Network,
		IPs: s.IPs, Infra: s.Infra, InfraPid: s.InfraPid, Monitor: s.Monitor, ResourcesPB: s.ResourcesPB,
		config: s.config,
	}
}

// ImageVolume is an image mounted into a container (CRI Mount.image).
type ImageVolume struct {
	Path     string `json:"path"` // container path
	Snapshot string `json:"snapshot"`
	Dir      string `json:"dir"` // where the image is mounted on the host
	ImageID  string `json:"imageId"`
}

// Config is the container's CRI config.
func (c *Container) Config() *runtimeapi.ContainerConfig { return c.config }

func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

func (s *Sandbox) decode() error {
	s.config = &runtimeapi.PodSandboxConfig{}
	return proto.Unmarshal(s.ConfigPB, s.config)
}

func (c *Container) decode() error {
	c.config = &runtimeapi.ContainerConfig{}
	return proto.Unmarshal(c.ConfigPB, c.config)
}

// recordStore persists records in meta.db.
type recordStore struct {
	db *bolt.DB
}

func (r recordStore) init() error {
	return r.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSandboxes, bucketContainers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

func (r recordStore) put(bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(id), data)
	})
}

func (r recordStore) delete(bucket []byte, id string) error {
	return r.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Delete([]byte(id))
	})
}

func (r recordStore) load() ([]*Sandbox, []*Container, error) {
	var sbs []*Sandbox
	var ctrs []*Container
	err := r.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSandboxes).ForEach(func(k, v []byte) error {
			var s Sandbox
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("sandbox record %s: %w: %w", k, err, errdefs.ErrDataLoss)
			}
			if err := s.decode(); err != nil {
				return fmt.Errorf("sandbox record %s config: %w: %w", k, err, errdefs.ErrDataLoss)
			}
			sbs = append(sbs, &s)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			var c Container
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("container record %s: %w: %w", k, err, errdefs.ErrDataLoss)
			}
			if err := c.decode(); err != nil {
				return fmt.Errorf("container record %s config: %w: %w", k, err, errdefs.ErrDataLoss)
			}
			ctrs = append(ctrs, &c)
			return nil
		})
	})
	return sbs, ctrs, err
}
