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

// classes is ordered: the first class an error wraps wins.
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

// Is* helpers, for readability at call sites.
func IsNotFound(err error) bool        { return errors.Is(err, ErrNotFound) }
func IsAlreadyExists(err error) bool   { return errors.Is(err, ErrAlreadyExists) }
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// Classified reports whether err carries a class (a wrapped class error,
// or a gRPC status other than Unknown).
func Classified(err error) bool { return err != nil && Class(err) != "unknown" }

// Class names the class of err ("ok" for nil, "unknown" when no class is wrapped).
func Class(err error) string {
	if err == nil {
		return "ok"
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return codeName(s.Code())
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "unknown"
}

func codeName(c codes.Code) string {
	for _, cl := range classes {
		if cl.code == c {
			return cl.name
		}
	}
	return "unknown"
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
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
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
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsFailedPrecondition reports whether err is of class ErrFailedPrecondition.
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }

// IsUnauthenticated reports whether err is of class ErrUnauthenticated.
func IsUnauthenticated(err error) bool { return errors.Is(err, ErrUnauthenticated) }

// IsResourceExhausted reports whether err is of class ErrResourceExhausted.
func IsResourceExhausted(err error) bool { return errors.Is(err, ErrResourceExhausted) }
