package errdefs

import (
	"context"
	"errors"
	"fmt"
	"testing"
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
	} {
		if got := Classified(c.err); got != c.want {
			t.Errorf("Classified(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// The class an error states beside a wrapped cause wins over the cause's
// own class, in either table order; the cause stays visible to errors.Is.
func TestOfNearestClassWins(t *testing.T) {
	notFound := fmt.Errorf("read blob: %w", ErrNotFound)
	invalid := fmt.Errorf("parse: %w", ErrInvalidArgument)
	for _, c := range []struct {
		err  error
		want error
	}{
		{fmt.Errorf("layer: %w: %w", notFound, ErrDataLoss), ErrDataLoss},
		{fmt.Errorf("layer: %w: %w", invalid, ErrNotFound), ErrNotFound},
		{fmt.Errorf("ctx: %w", fmt.Errorf("%w: %w", invalid, ErrInternal)), ErrInternal},
		{fmt.Errorf("%w: %w", ErrNotFound, ErrInvalidArgument), ErrInvalidArgument}, // same depth: table order
		{errors.Join(errors.New("a"), notFound), ErrNotFound},
		{fmt.Errorf("plain: %w", errors.New("x")), nil},
		{fmt.Errorf("%w: %w", context.Canceled, ErrUnavailable), ErrUnavailable},
	} {
		if got := Of(c.err); got != c.want {
			t.Errorf("Of(%v) = %v, want %v", c.err, got, c.want)
		}
		if c.want != nil && !Is(c.err, c.want) {
			t.Errorf("Is(%v, %v) = false", c.err, c.want)
		}
	}
	err := fmt.Errorf("layer: %w: %w", notFound, ErrDataLoss)
	if IsNotFound(err) || !errors.Is(err, ErrNotFound) {
		t.Errorf("IsNotFound(%v) must follow the class, errors.Is the chain", err)
	}
}
