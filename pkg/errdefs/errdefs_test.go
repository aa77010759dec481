package errdefs

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestClassified(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("plain"), false},
		{fmt.Errorf("wrapped: %w", ErrNotFound), true},
		{fmt.Errorf("%w: %w", errors.New("cause"), ErrInternal), true},
		{status.Error(codes.Unknown, "x"), false},
		{status.Error(codes.NotFound, "x"), true},
	} {
		if got := Classified(c.err); got != c.want {
			t.Errorf("Classified(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
