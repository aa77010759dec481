// Package errdefs defines the error classes used across shim. Leaves wrap one
// of these sentinels with %w; the gRPC layer maps the class to a status code
// with ToGRPC. Never match on error text.
package errdefs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error classes. Wrap them: fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound).
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrNotImplemented     = errors.New("not implemented")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrAborted            = errors.New("aborted")
	ErrDataLoss           = errors.New("data loss")
	ErrInternal           = errors.New("internal")
)

// classes is ordered: of the classes an error wraps at the same depth, the
// first in this table wins (see Of).
var classes = []struct {
	err  error
	name string
	code codes.Code
}{
	{ErrInvalidArgument, "invalid_argument", codes.InvalidArgument},
	{ErrNotFound, "not_found", codes.NotFound},
	{ErrAlreadyExists, "already_exists", codes.AlreadyExists},
	{ErrFailedPrecondition, "failed_precondition", codes.FailedPrecondition},
	{ErrUnavailable, "unavailable", codes.Unavailable},
	{ErrNotImplemented, "not_implemented", codes.Unimplemented},
	{ErrPermissionDenied, "permission_denied", codes.PermissionDenied},
	{ErrResourceExhausted, "resource_exhausted", codes.ResourceExhausted},
	{ErrUnauthenticated, "unauthenticated", codes.Unauthenticated},
	{ErrAborted, "aborted", codes.Aborted},
	{ErrDataLoss, "data_loss", codes.DataLoss},
	{ErrInternal, "internal", codes.Internal},
	{context.DeadlineExceeded, "deadline_exceeded", codes.DeadlineExceeded},
	{context.Canceled, "canceled", codes.Canceled},
}

// ClassNames lists the wire names of the classes, in table order. The C
// monitor's copy (pkg/monitor/cmon/protocol.h) is generated from it.
func ClassNames() []string {
	out := make([]string, len(classes))
	for i, c := range classes {
		out[i] = c.name
	}
	return out
}

// Is* helpers, for readability at call sites. They ask for the class of
// err (Of), not whether a class is somewhere in its chain.
func IsNotFound(err error) bool        { return Is(err, ErrNotFound) }
func IsAlreadyExists(err error) bool   { return Is(err, ErrAlreadyExists) }
func IsInvalidArgument(err error) bool { return Is(err, ErrInvalidArgument) }

// Is reports whether the class of err (Of) is class.
func Is(err, class error) bool { return err != nil && Of(err) == class }

// Classified reports whether err carries a class (a wrapped class error,
// or a gRPC status other than Unknown).
func Classified(err error) bool { return Of(err) != nil }

// Class names the class of err ("ok" for nil, "unknown" when no class is wrapped).
func Class(err error) string {
	if err == nil {
		return "ok"
	}
	c := Of(err)
	for _, cl := range classes {
		if cl.err == c {
			return cl.name
		}
	}
	return "unknown"
}

// Of returns the class of err: the class sentinel (or context error) it
// (or the gRPC status) it wraps nearest to the top of its chain; nil when
// it has none. A cause wrapped with %w keeps its own class
// deeper down, so
//
//	fmt.Errorf("open layer: %w: %w", cause, ErrDataLoss)
//
// is of class ErrDataLoss whatever the cause's class, while errors.Is
// still finds the cause. Classes at the same depth are taken in table order.
func Of(err error) error {
	level := []error{err}
	for depth := 0; len(level) > 0 && depth < 64; depth++ {
		var found error
		rank := len(classes)
		for _, e := range level {
			if i := classIndex(e); i < rank {
				found, rank = classes[i].err, i
			}
		}
		if found != nil {
			return found
		}
		var next []error
		for _, e := range level {
			switch u := e.(type) {
			case interface{ Unwrap() error }:
				if w := u.Unwrap(); w != nil {
					next = append(next, w)
				}
			case interface{ Unwrap() []error }:
				next = append(next, u.Unwrap()...)
			}
		}
		level = next
	}
	return nil
}

// classIndex is the index in classes of e itself (a class sentinel, or a
// gRPC status of a known code), or len(classes).
func classIndex(e error) int {
	code := codes.Unknown
	if s, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
		code = s.GRPCStatus().Code()
	}
	for i, c := range classes {
		if e == c.err || (code != codes.Unknown && c.code == code) {
			return i
		}
	}
	return len(classes)
}

// ToGRPC converts err to a gRPC status error with the code of its class.
// Errors that already carry a status are returned unchanged.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	c := Of(err)
	for _, cl := range classes {
		if cl.err == c {
			return status.Error(cl.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// FromGRPC converts a gRPC status error back into an error of the matching class.
func FromGRPC(err error) error {
	s, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	for _, c := range classes {
		if c.code == s.Code() {
			return fmt.Errorf("%s: %w", s.Message(), c.err)
		}
	}
	return err
}

// Wire is the typed form in which an error crosses a process boundary
// (daemon, monitor, container init): a class and a message, as JSON.
type Wire struct {
	Class   string `json:"class"`
	Message string `json:"message"`
}

// ToWire encodes err for another process.
func ToWire(err error) Wire {
	return Wire{Class: Class(err), Message: err.Error()}
}

// MarshalError encodes err as JSON Wire bytes.
func MarshalError(err error) []byte {
	b, _ := json.Marshal(ToWire(err))
	return b
}

// Err rebuilds an error of the same class from its wire form.
func (w Wire) Err() error {
	for _, c := range classes {
		if c.name == w.Class {
			return &wireError{msg: w.Message, class: c.err}
		}
	}
	return errors.New(w.Message)
}

type wireError struct {
	msg   string
	class error
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.class }

// IsUnavailable reports whether err is of class ErrUnavailable.
func IsUnavailable(err error) bool { return Is(err, ErrUnavailable) }

// IsFailedPrecondition reports whether err is of class ErrFailedPrecondition.
func IsFailedPrecondition(err error) bool { return Is(err, ErrFailedPrecondition) }

// IsUnauthenticated reports whether err is of class ErrUnauthenticated.
func IsUnauthenticated(err error) bool { return Is(err, ErrUnauthenticated) }

// IsResourceExhausted reports whether err is of class ErrResourceExhausted.
func IsResourceExhausted(err error) bool { return Is(err, ErrResourceExhausted) }
