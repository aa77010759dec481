package execdrv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// maxFeatures caps the `features` output read from a runtime.
const maxFeatures = 1 << 20

// Features asks the runtime what it supports (`<runtime> features`, the
// OCI features document; runc 1.1 and later).
func (o *OCIBinary) Features(ctx context.Context) (*features.Features, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := o.run(ctx, runOpts{stdout: &out}, "features"); err != nil {
		return nil, err
	}
	if out.Len() > maxFeatures {
		return nil, fmt.Errorf("%s features: more than %d bytes: %w", o.Binary, maxFeatures, errdefs.ErrInvalidArgument)
	}
	var f features.Features
	if err := json.NewDecoder(io.LimitReader(&out, maxFeatures)).Decode(&f); err != nil {
		return nil, fmt.Errorf("%s features: %w: %w", o.Binary, err, errdefs.ErrInvalidArgument)
	}
	return &f, nil
}
