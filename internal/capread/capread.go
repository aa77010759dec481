// Package capread reads a whole stream or file up to a cap. Content over
// the cap is refused with one error class, ResourceExhausted (as gRPC
// refuses a message over its size limit): errors.Is(err, ErrTooLarge)
// tells it apart from a read error, which is returned as it came.
package capread

import (
	"fmt"
	"io"
	"os"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// ErrTooLarge is the error of content over its cap.
var ErrTooLarge = fmt.Errorf("over the size cap: %w", errdefs.ErrResourceExhausted)

// Read reads r to its end; more than max bytes is ErrTooLarge.
func Read(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("more than %d bytes: %w", max, ErrTooLarge)
	}
	return b, nil
}

// File reads the file at path; more than max bytes is ErrTooLarge.
func File(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := Read(f, max)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
