package errgrpc

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// Every class has its own code, and no code is left over.
func TestClassCodesCoverClasses(t *testing.T) {
	classes := errdefs.Classes()
	if len(classCodes) != len(classes) {
		t.Fatalf("%d codes for %d classes", len(classCodes), len(classes))
	}
	seen := map[codes.Code]bool{}
	for _, class := range classes {
		code := Code(fmt.Errorf("x: %w", class))
		if code == codes.Unknown || seen[code] {
			t.Errorf("class %v: code %v (unknown or taken twice)", class, code)
		}
		seen[code] = true
		back := FromGRPC(ToGRPC(fmt.Errorf("x: %w", class)))
		if errdefs.Of(back) != class || !errors.Is(back, class) {
			t.Errorf("class %v: round trip gives %v", class, back)
		}
	}
}

func TestToGRPC(t *testing.T) {
	notFound := fmt.Errorf("read blob: %w", errdefs.ErrNotFound)
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("layer: %w: %w", notFound, errdefs.ErrDataLoss), codes.DataLoss},
		{notFound, codes.NotFound},
		{errors.New("plain"), codes.Unknown},
		{status.Error(codes.Aborted, "kept"), codes.Aborted},
	} {
		if got := status.Code(ToGRPC(c.err)); got != c.want {
			t.Errorf("ToGRPC(%v): %v, want %v", c.err, got, c.want)
		}
	}
	if ToGRPC(nil) != nil {
		t.Error("ToGRPC(nil) is not nil")
	}
	st := status.Error(codes.Aborted, "kept")
	if ToGRPC(st) != st {
		t.Error("a status error is not returned unchanged")
	}
	if err := errors.New("plain"); FromGRPC(err) != err {
		t.Error("FromGRPC changed an error without a status")
	}
}

func TestClassifiedStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unknown, "x"), false},
		{status.Error(codes.NotFound, "x"), true},
		{fmt.Errorf("call: %w", status.Error(codes.NotFound, "x")), true},
	} {
		if got := errdefs.Classified(c.err); got != c.want {
			t.Errorf("Classified(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A status in a chain counts in errdefs.Of as its class would, at its depth.
func TestOfStatusInChain(t *testing.T) {
	st := status.Error(codes.NotFound, "gone")
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"a status", status.Error(codes.AlreadyExists, "x"), errdefs.ErrAlreadyExists},
		{"a wrapped status", fmt.Errorf("call: %w", st), errdefs.ErrNotFound},
		{"same depth, table order", fmt.Errorf("call: %w: %w", st, errdefs.ErrUnavailable), errdefs.ErrNotFound},
		{"a deeper status", fmt.Errorf("call: %w: %w", fmt.Errorf("x: %w", st), errdefs.ErrAborted), errdefs.ErrAborted},
		{"Unknown status", status.Error(codes.Unknown, "x"), nil},
	} {
		if got := errdefs.Of(c.err); got != c.want {
			t.Errorf("%s: Of(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	if got := errdefs.Class(fmt.Errorf("call: %w", st)); got != "not_found" {
		t.Errorf("Class of a wrapped status: %q", got)
	}
}
