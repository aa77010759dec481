package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// target is where ref lives on the loopback registry: the repository path a
// containerd hosts.toml mirror requests (/v2/<path>/manifests/<tag>), under
// registry. docker.io/library/busybox -> REGISTRY/library/busybox,
// registry.k8s.io/pause:3.9 -> REGISTRY/pause:3.9, shim-test/x:1 ->
// REGISTRY/shim-test/x:1.
func target(registry, ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, fmt.Errorf("reference %q must be a tag: %w: %w", ref, errdefs.ErrInvalidArgument, err)
	}
	return name.NewTag(registry+"/"+tag.RepositoryStr()+":"+tag.TagStr(), name.Insecure)
}

// pushResult is one reference pushed.
type pushResult struct {
	ref     string
	target  name.Tag
	digest  v1.Hash
	changed bool // false: the registry already had this digest under the tag
}

// push writes b under every reference of its definition. A tag that already
// points at the same digest is left alone; blobs the registry has are not
// sent again (remote.Write checks), so re-running is cheap.
func push(ctx context.Context, registry string, b built, opts ...remote.Option) ([]pushResult, error) {
	want, err := b.digest()
	if err != nil {
		return nil, err
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	var results []pushResult
	for _, ref := range b.def.refs {
		tag, err := target(registry, ref)
		if err != nil {
			return results, err
		}
		have, err := remote.Head(tag, opts...)
		if err == nil && have.Digest == want {
			results = append(results, pushResult{ref: ref, target: tag, digest: want})
			continue
		}
		var terr *transport.Error
		if err != nil && !(errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound) {
			return results, fmt.Errorf("head %s: %w: %w", tag, errdefs.ErrUnavailable, err)
		}
		if b.index != nil {
			err = remote.WriteIndex(tag, b.index, opts...)
		} else {
			err = remote.Write(tag, b.image, opts...)
		}
		if err != nil {
			return results, fmt.Errorf("push %s: %w: %w", tag, errdefs.ErrUnavailable, err)
		}
		results = append(results, pushResult{ref: ref, target: tag, digest: want, changed: true})
	}
	return results, nil
}
