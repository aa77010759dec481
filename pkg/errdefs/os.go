package errdefs

import (
	"errors"
	"fmt"
	"syscall"
)

// osClasses maps errnos to classes: shim's one errno→class map. A caller
// whose context gives the other errnos a meaning passes it as the fallback
// of OSClass (a failed mount is a bad mount request, a failed execve a
// container that cannot start).
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
	{syscall.ENODEV, ErrNotFound},
	{syscall.EEXIST, ErrAlreadyExists},
	{syscall.EACCES, ErrPermissionDenied},
	{syscall.EPERM, ErrPermissionDenied},
	{syscall.EROFS, ErrFailedPrecondition},
	{syscall.EBUSY, ErrFailedPrecondition}, // e.g. a memory limit below the usage
	{syscall.ENOSPC, ErrResourceExhausted},
	{syscall.EDQUOT, ErrResourceExhausted},
	{syscall.EMFILE, ErrResourceExhausted},
	{syscall.ENFILE, ErrResourceExhausted},
	{syscall.ENOMEM, ErrResourceExhausted},
	{syscall.EMLINK, ErrResourceExhausted},
	{syscall.EAGAIN, ErrResourceExhausted}, // fork, setuid: a process limit
}

// OS gives an error from the operating system a class by its errno
// (ErrInternal when the errno is not in the map); an error that already
// has a class is returned unchanged.
func OS(err error) error {
	if err == nil || Classified(err) {
		return err
	}
	return fmt.Errorf("%w: %w", err, OSClass(err, ErrInternal))
}

// ErrnoClass is one entry of the errno→class map.
type ErrnoClass struct {
	Errno syscall.Errno
	Class string // its wire name (Class)
}

// OSClasses lists the errno→class map, for the C monitor's generated copy
// (pkg/monitor/cmon/protocol.h).
func OSClasses() []ErrnoClass {
	out := make([]ErrnoClass, len(osClasses))
	for i, c := range osClasses {
		out[i] = ErrnoClass{c.errno, Class(c.class)}
	}
	return out
}

// OSClass is the class of err's errno, or fallback when err has no errno
// in the map.
func OSClass(err, fallback error) error {
	for _, c := range osClasses {
		if errors.Is(err, c.errno) {
			return c.class
		}
	}
	return fallback
}
