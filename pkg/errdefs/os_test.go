package errdefs

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestOS(t *testing.T) {
	_, err := os.Stat("/" + strings.Repeat("n", 300))
	if got := OS(err); !errors.Is(got, ErrInvalidArgument) || !errors.Is(got, syscall.ENAMETOOLONG) {
		t.Fatalf("ENAMETOOLONG: %v", got)
	}
	_, err = os.Stat("/nonexistent-shim-test")
	if got := OS(err); !IsNotFound(got) {
		t.Fatalf("ENOENT: %v", got)
	}
	if got := OS(syscall.EIO); !errors.Is(got, ErrInternal) {
		t.Fatalf("EIO: %v", got)
	}
	classed := errors.Join(syscall.ENOENT, ErrAborted)
	if got := OS(classed); got != classed {
		t.Fatalf("a classed error changed: %v", got)
	}
	if OS(nil) != nil {
		t.Fatal("nil")
	}
}

func TestOSClassFallback(t *testing.T) {
	if got := OSClass(syscall.EBUSY, ErrInvalidArgument); got != ErrFailedPrecondition {
		t.Errorf("EBUSY: %v", got)
	}
	if got := OSClass(syscall.ENOEXEC, ErrFailedPrecondition); got != ErrFailedPrecondition {
		t.Errorf("ENOEXEC with a fallback: %v", got)
	}
	if got := OSClass(errors.New("no errno"), ErrAborted); got != ErrAborted {
		t.Errorf("no errno: %v", got)
	}
}
