package imagestore

import (
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Size caps for registry-supplied JSON.
const (
	maxManifestSize = 4 << 20
	maxConfigSize   = 4 << 20
)

// Image is one image in the store, keyed by its ID (the config digest).
type Image struct {
	ID          digest.Digest       `json:"id"`
	RepoTags    []string            `json:"repoTags,omitempty"`
	RepoDigests []string            `json:"repoDigests,omitempty"`
	Index       *ocispec.Descriptor `json:"index,omitempty"` // set when pulled through an index
	Manifest    ocispec.Descriptor  `json:"manifest"`
	ConfigDesc  ocispec.Descriptor  `json:"configDesc"`
	Config      ocispec.ImageConfig `json:"config"`
	Platform    ocispec.Platform    `json:"platform"`
	Layers      []Layer             `json:"layers"`
	Size        int64               `json:"size"` // bytes of content: layers, config and manifests
	Pulled      time.Time           `json:"pulled"`
	Created     *time.Time          `json:"created,omitempty"`
}

// Layer is one layer of an image.
type Layer struct {
	ocispec.Descriptor
	DiffID  digest.Digest `json:"diffID"`
	ChainID digest.Digest `json:"chainID"` // the committed snapshot's key
}

// ChainID is the key of the image's top layer snapshot, "" for an image
// without layers.
func (i *Image) ChainID() string {
	if len(i.Layers) == 0 {
		return ""
	}
	return i.Layers[len(i.Layers)-1].ChainID.String()
}

// Blobs lists every content blob the image references, its layers last.
func (i *Image) Blobs() []digest.Digest {
	out := []digest.Digest{i.Manifest.Digest, i.ConfigDesc.Digest}
	if i.Index != nil {
		out = append(out, i.Index.Digest)
	}
	for _, l := range i.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// User splits the image's configured user into a numeric uid (nil for a
// name) and a user name, as the CRI Image message wants them.
func (i *Image) User() (uid *int64, username string) {
	u := i.Config.User
	if j := strings.IndexByte(u, ':'); j >= 0 {
		u = u[:j]
	}
	if u == "" {
		return nil, ""
	}
	if n, err := strconv.ParseInt(u, 10, 64); err == nil && n >= 0 && n <= 1<<32-1 {
		return &n, ""
	}
	return nil, u
}

// chainIDs computes the chain IDs of diffIDs.
func chainIDs(diffIDs []digest.Digest) []digest.Digest {
	return identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
}

func clone(img *Image) *Image {
	c := *img
	c.RepoTags = append([]string(nil), img.RepoTags...)
	c.RepoDigests = append([]string(nil), img.RepoDigests...)
	c.Layers = append([]Layer(nil), img.Layers...)
	return &c
}
