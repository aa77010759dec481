package errdefs

import (
	"errors"
	"fmt"
	"syscall"
)

// osClasses maps the errnos of file and path operations to classes: the
// one errno→class map for errors outside a more specific context (mounts,
// cgroups and exec keep their own, in pkg/libct).
var osClasses = []struct {
	errno syscall.Errno
	class error
}{
	{syscall.ENAMETOOLONG, ErrInvalidArgument},
	{syscall.ELOOP, ErrInvalidArgument},
	{syscall.ENOTDIR, ErrInvalidArgument},
	{syscall.EISDIR, ErrInvalidArgument},
	{syscall.EINVAL, ErrInvalidArgument},
	{syscall.ENOENT, ErrNotFound},
	{syscall.EEXIST, ErrAlreadyExists},
	{syscall.EACCES, ErrPermissionDenied},
	{syscall.EPERM, ErrPermissionDenied},
	{syscall.EROFS, ErrFailedPrecondition},
	{syscall.ENOSPC, ErrResourceExhausted},
	{syscall.EDQUOT, ErrResourceExhausted},
	{syscall.EMFILE, ErrResourceExhausted},
	{syscall.ENFILE, ErrResourceExhausted},
	{syscall.ENOMEM, ErrResourceExhausted},
	{syscall.EMLINK, ErrResourceExhausted},
}

// OS gives an error from the operating system a class by its errno
// (ErrInternal when the errno is not in the map); an error that already
// has a class is returned unchanged.
func OS(err error) error {
	if err == nil || Classified(err) {
		return err
	}
	for _, c := range osClasses {
		if errors.Is(err, c.errno) {
			return fmt.Errorf("%w: %w", err, c.class)
		}
	}
	return fmt.Errorf("%w: %w", err, ErrInternal)
}
