package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// compression is how a layer blob is encoded.
type compression int

const (
	gzipped compression = iota
	zstded
	uncompressed
)

func (c compression) String() string {
	switch c {
	case gzipped:
		return "gzip"
	case zstded:
		return "zstd"
	case uncompressed:
		return "none"
	}
	return fmt.Sprintf("compression(%d)", int(c))
}

// ociMediaType is the OCI layer media type of the encoding.
func (c compression) ociMediaType() types.MediaType {
	switch c {
	case zstded:
		return types.OCILayerZStd
	case uncompressed:
		return types.OCIUncompressedLayer
	}
	return types.OCILayer
}

// layer is a v1.Layer held in memory with its digests computed once.
// Compressing the same tar the same way always gives the same blob: gzip
// without name or mtime in its header, zstd from a single-threaded encoder.
type layer struct {
	tar    []byte
	blob   []byte
	mt     types.MediaType
	digest v1.Hash
	diffID v1.Hash
}

var _ v1.Layer = (*layer)(nil)

func newLayer(tarball []byte, c compression) (*layer, error) {
	var blob []byte
	switch c {
	case uncompressed:
		blob = tarball
	case gzipped:
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		if _, err := zw.Write(tarball); err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		if err := zw.Close(); err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		blob = buf.Bytes()
	case zstded:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		blob = enc.EncodeAll(tarball, nil)
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
	default:
		return nil, fmt.Errorf("%v: %w", c, errdefs.ErrInvalidArgument)
	}
	digest, _, err := v1.SHA256(bytes.NewReader(blob))
	if err != nil {
		return nil, err
	}
	diffID, _, err := v1.SHA256(bytes.NewReader(tarball))
	if err != nil {
		return nil, err
	}
	return &layer{tar: tarball, blob: blob, mt: c.ociMediaType(), digest: digest, diffID: diffID}, nil
}

// withMediaType returns the same blob described with another media type
// (a Docker schema2 image points at the very same gzip blob).
func (l *layer) withMediaType(mt types.MediaType) *layer {
	c := *l
	c.mt = mt
	return &c
}

func (l *layer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *layer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *layer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *layer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *layer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *layer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}
