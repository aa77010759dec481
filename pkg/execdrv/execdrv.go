// Package execdrv is the execution driver the RuntimeService uses to run
// OCI containers: the native driver runs them in-process with pkg/libct,
// the oci-binary driver runs an external runc-compatible runtime (runc,
// crun, `shim oci`) for RuntimeClass handlers. Both have the same
// semantics and pass one test suite (execdrvtest).
//
// The caller must be the subreaper of the container processes (the
// per-pod monitor): with the native driver it is their parent, with the
// oci-binary driver they are reparented to it when the runtime exits. It
// reaps them and learns exit codes with wait4.
package execdrv

import (
	"context"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"github.com/shim-cri/shim/pkg/libct"
	"golang.org/x/sys/unix"
)

// Driver runs containers from OCI bundles (a directory with config.json
// and the root filesystem).
type Driver interface {
	// Name is the driver's name ("native", "oci-binary:runc").
	Name() string
	// Create sets the container up and leaves it waiting for Start; it
	// returns the init's pid.
	Create(ctx context.Context, id, bundle string, opts CreateOpts) (int, error)
	Start(ctx context.Context, id string) error
	State(ctx context.Context, id string) (State, error)
	// Kill signals the init, or with all every process of the container.
	Kill(ctx context.Context, id string, sig unix.Signal, all bool) error
	// Delete removes a stopped (or, with force, any) container.
	Delete(ctx context.Context, id string, force bool) error
	// Exec starts p in the container and returns its pid.
	Exec(ctx context.Context, id string, p *specs.Process, opts IO) (int, error)
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	Update(ctx context.Context, id string, r *specs.LinuxResources) error
	Stats(ctx context.Context, id string) (*libct.Stats, error)
	Pids(ctx context.Context, id string) ([]int, error)
	// Features is the driver's OCI features document (what it supports).
	Features(ctx context.Context) (*features.Features, error)
}

// IO is the stdio of a container process, and the console socket (a
// listening unix socket path) that receives the pty master when the
// process asks for a terminal.
type IO struct {
	Stdin, Stdout, Stderr *os.File
	ConsoleSocket         string
}

// CreateOpts are the options of Create.
type CreateOpts struct {
	IO
	NoPivot bool
}

// Status is a container's OCI status as a driver reports it.
type Status string

// OCI statuses.
const (
	StatusCreating Status = "creating"
	StatusCreated  Status = "created"
	StatusRunning  Status = "running"
	StatusPaused   Status = "paused"
	StatusStopped  Status = "stopped"
)

// State is a container's state as the driver reports it.
type State struct {
	ID          string
	Pid         int
	Status      Status
	Bundle      string
	Annotations map[string]string
}
