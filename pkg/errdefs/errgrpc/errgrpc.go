// Package errgrpc maps shim's error classes (package errdefs) to gRPC status
// codes and back. It is apart from errdefs so that binaries which never
// speak gRPC (the lean cmd/shim-runtime) do not link gRPC and protobuf.
//
// Importing it registers gRPC status errors with errdefs.Of: a status
// anywhere in an error chain has the class of its code.
package errgrpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// classCodes gives each errdefs class its gRPC code; a test checks that it
// covers errdefs.Classes() one to one.
var classCodes = []struct {
	class error
	code  codes.Code
}{
	{errdefs.ErrInvalidArgument, codes.InvalidArgument},
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	{errdefs.ErrUnavailable, codes.Unavailable},
	{errdefs.ErrNotImplemented, codes.Unimplemented},
	{errdefs.ErrPermissionDenied, codes.PermissionDenied},
	{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
	{errdefs.ErrUnauthenticated, codes.Unauthenticated},
	{errdefs.ErrAborted, codes.Aborted},
	{errdefs.ErrDataLoss, codes.DataLoss},
	{errdefs.ErrInternal, codes.Internal},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

func init() { errdefs.RegisterForeign(statusClass) }

// statusClass is the class of e itself when it is a gRPC status error of a
// code with a class (not of its chain: errdefs.Of walks that), or nil.
func statusClass(e error) error {
	s, ok := e.(interface{ GRPCStatus() *status.Status })
	if !ok {
		return nil
	}
	return codeClass(s.GRPCStatus().Code())
}

func codeClass(code codes.Code) error {
	for _, c := range classCodes {
		if c.code == code {
			return c.class
		}
	}
	return nil
}

// Code is the gRPC code of err's class (errdefs.Of): OK for nil, Unknown
// for an error without a class.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	class := errdefs.Of(err)
	for _, c := range classCodes {
		if c.class == class {
			return c.code
		}
	}
	return codes.Unknown
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
	return status.Error(Code(err), err.Error())
}

// FromGRPC converts a gRPC status error back into an error of the matching class.
func FromGRPC(err error) error {
	s, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	if class := codeClass(s.Code()); class != nil {
		return fmt.Errorf("%s: %w", s.Message(), class)
	}
	return err
}
