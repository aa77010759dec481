package engine

import (
	"context"
	"time"

	"github.com/shim-cri/shim/pkg/imagestore"
	"github.com/shim-cri/shim/pkg/log"
)

// PullRequest asks for an image to be pulled.
type PullRequest struct {
	Ref  string
	Auth *imagestore.Auth
	Pod  string // sandbox the pull is for, informational
}

// FsUsage is the image filesystem usage.
type FsUsage struct {
	Mountpoint string
	Bytes      int64
	Inodes     int64
	Timestamp  time.Time
}

// Images are the image jobs.
type Images struct {
	Pull   *Handler[PullRequest, *imagestore.Image]
	Status *Handler[string, *imagestore.Image]
	List   *Handler[struct{}, []*imagestore.Image]
	Remove *Handler[string, struct{}]
	FsInfo *Handler[struct{}, FsUsage]

	store *imagestore.Store
}

// Store is the image store the jobs work on.
func (i *Images) Store() *imagestore.Store { return i.store }

// RegisterImages registers the image jobs on e. mountpoint is reported as
// the image filesystem.
func RegisterImages(e *Engine, store *imagestore.Store, mountpoint string) *Images {
	i := &Images{store: store}
	i.Pull = Register(e, "pull", Spec[PullRequest, *imagestore.Image]{
		Object: func(r PullRequest) string { return "image:" + r.Ref },
		Args: func(r PullRequest) map[string]string {
			a := map[string]string{log.FieldImage: r.Ref, "auth": "none"}
			if r.Auth != nil {
				a["auth"] = "yes" // never record secrets
			}
			if r.Pod != "" {
				a[log.FieldPodID] = r.Pod
			}
			return a
		},
		Run: func(ctx context.Context, j *Job, r PullRequest) (*imagestore.Image, error) {
			return store.Pull(ctx, r.Ref, r.Auth, j.Logf)
		},
	})
	i.Status = Register(e, "image_status", Spec[string, *imagestore.Image]{
		Args:  func(ref string) map[string]string { return one(log.FieldImage, ref) },
		Quiet: true,
		Run: func(ctx context.Context, j *Job, ref string) (*imagestore.Image, error) {
			return store.Get(ctx, ref)
		},
	})
	i.List = Register(e, "list_images", Spec[struct{}, []*imagestore.Image]{
		Quiet: true,
		Run: func(ctx context.Context, j *Job, _ struct{}) ([]*imagestore.Image, error) {
			return store.List(ctx), nil
		},
	})
	i.Remove = Register(e, "remove_image", Spec[string, struct{}]{
		Object: func(ref string) string { return "image:" + ref },
		Args:   func(ref string) map[string]string { return one(log.FieldImage, ref) },
		Run: func(ctx context.Context, j *Job, ref string) (struct{}, error) {
			return struct{}{}, store.Remove(ctx, ref)
		},
	})
	i.FsInfo = Register(e, "fs_info", Spec[struct{}, FsUsage]{
		Quiet: true,
		Run: func(ctx context.Context, j *Job, _ struct{}) (FsUsage, error) {
			b, n, err := store.Usage(ctx)
			return FsUsage{Mountpoint: mountpoint, Bytes: b, Inodes: n, Timestamp: time.Now()}, err
		},
	})
	return i
}
