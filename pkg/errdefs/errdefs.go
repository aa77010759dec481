// Package errdefs defines the error classes used across shim. Leaves wrap one
// of these sentinels with %w; the gRPC layer maps the class to a status code
// with errgrpc.ToGRPC. Never match on error text.
//
// errdefs does not import gRPC: the lean runtime binary (cmd/shim-runtime)
// links it, and gRPC with protobuf would add milliseconds to every start of
// it. Package errgrpc holds the gRPC side.
package errdefs

import (
	"context"
	"encoding/json"
	"errors"
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
}{
	{ErrInvalidArgument, "invalid_argument"},
	{ErrNotFound, "not_found"},
	{ErrAlreadyExists, "already_exists"},
	{ErrFailedPrecondition, "failed_precondition"},
	{ErrUnavailable, "unavailable"},
	{ErrNotImplemented, "not_implemented"},
	{ErrPermissionDenied, "permission_denied"},
	{ErrResourceExhausted, "resource_exhausted"},
	{ErrUnauthenticated, "unauthenticated"},
	{ErrAborted, "aborted"},
	{ErrDataLoss, "data_loss"},
	{ErrInternal, "internal"},
	{context.DeadlineExceeded, "deadline_exceeded"},
	{context.Canceled, "canceled"},
}

// Classes lists the class errors, in table order.
func Classes() []error {
	out := make([]error, len(classes))
	for i, c := range classes {
		out[i] = c.err
	}
	return out
}

// foreign, when set, gives the class of an error of a type from another
// package that carries a class in its own terms (a gRPC status), or nil.
var foreign func(error) error

// RegisterForeign makes Of ask classify for the class of each error in a
// chain that is not itself a class error. classify looks at the error it
// is given only, never down its chain (Of walks the chain). Package errgrpc
// registers gRPC status errors this way, from its init function: a status
// keeps its class in Of wherever gRPC is linked, while errdefs links no
// gRPC. It may be called once, from an init function.
func RegisterForeign(classify func(error) error) {
	if foreign != nil {
		panic("errdefs: RegisterForeign called twice")
	}
	foreign = classify
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
// or a foreign one such as a gRPC status other than Unknown: RegisterForeign).
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

// Of returns the class of err: the class sentinel (or context error, or
// foreign error: RegisterForeign) it wraps nearest to the top of its chain; nil when
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
// foreign error of a known class), or len(classes).
func classIndex(e error) int {
	for i, c := range classes {
		if e == c.err {
			return i
		}
	}
	if foreign == nil {
		return len(classes)
	}
	f := foreign(e)
	for i, c := range classes {
		if f != nil && f == c.err {
			return i
		}
	}
	return len(classes)
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
