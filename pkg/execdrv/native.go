package execdrv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"golang.org/x/sys/unix"
)

// Native runs containers in-process with pkg/libct. The binary must
// dispatch libct's "init" (see libct.Init).
type Native struct {
	// Root is the libct state directory.
	Root string
}

// NewNative returns the native driver with state under root.
func NewNative(root string) *Native { return &Native{Root: root} }

// Name implements Driver.
func (n *Native) Name() string { return "native" }

func readBundleSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w: %w", bundle, err, errdefs.ErrNotFound)
	}
	defer f.Close()
	var s specs.Spec
	if err := json.NewDecoder(io.LimitReader(f, 16<<20)).Decode(&s); err != nil {
		return nil, fmt.Errorf("bundle %s: config.json: %w: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	return &s, nil
}

func dialSocket(path string) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("console socket %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Create implements Driver.
func (n *Native) Create(ctx context.Context, id, bundle string, opts CreateOpts) (int, error) {
	spec, err := readBundleSpec(bundle)
	if err != nil {
		return 0, err
	}
	sock, err := dialSocket(opts.ConsoleSocket)
	if err != nil {
		return 0, err
	}
	if sock != nil {
		defer sock.Close()
	}
	c, err := libct.Create(ctx, n.Root, id, spec, bundle, libct.CreateOpts{
		Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr, ConsoleSocket: sock, NoPivot: opts.NoPivot,
	})
	if err != nil {
		return 0, err
	}
	if c.Console != nil {
		// No console socket was given: nobody would read the pty.
		c.Console.Close()
	}
	st, _ := c.State()
	return st.Pid, nil
}

// PrepareDirect prepares container id (spec, in bundle) for the monitor
// to start its init itself (libct.PrepareCreate): false, with nothing
// made, when it needs the helper's Create.
func (n *Native) PrepareDirect(ctx context.Context, id, bundle string, spec *specs.Spec, cinit bool) (bool, error) {
	return libct.PrepareCreate(ctx, n.Root, id, spec, bundle, cinit)
}

// CommitDirect records pid as the init of container id, started by the
// monitor from what PrepareDirect made.
func (n *Native) CommitDirect(id string, pid int) error { return libct.CommitCreate(n.Root, id, pid) }

func (n *Native) load(id string) (*libct.Container, error) { return libct.Load(n.Root, id) }

// Start implements Driver.
func (n *Native) Start(ctx context.Context, id string) error {
	c, err := n.load(id)
	if err != nil {
		return err
	}
	return c.Start(ctx)
}

// State implements Driver.
func (n *Native) State(ctx context.Context, id string) (State, error) {
	c, err := n.load(id)
	if err != nil {
		return State{}, err
	}
	s, err := c.State()
	return State{ID: s.ID, Pid: s.Pid, Status: Status(s.Status), Bundle: s.Bundle, Annotations: s.Annotations}, err
}

// Kill implements Driver.
func (n *Native) Kill(ctx context.Context, id string, sig unix.Signal, all bool) error {
	c, err := n.load(id)
	if err != nil {
		return err
	}
	return c.Signal(sig, all)
}

// Delete implements Driver.
func (n *Native) Delete(ctx context.Context, id string, force bool) error {
	c, err := n.load(id)
	if err != nil {
		return err
	}
	if err := c.Delete(ctx, force); err != nil {
		return err
	}
	if h := c.Spec().Hooks; h != nil && len(h.Poststop) > 0 {
		st, _ := c.State()
		st.Status = libct.StatusStopped
		_ = libct.RunHooks(ctx, h.Poststop, st, true)
	}
	return nil
}

// Exec implements Driver.
func (n *Native) Exec(ctx context.Context, id string, p *specs.Process, o IO) (int, error) {
	c, err := n.load(id)
	if err != nil {
		return 0, err
	}
	sock, err := dialSocket(o.ConsoleSocket)
	if err != nil {
		return 0, err
	}
	if sock != nil {
		defer sock.Close()
	}
	proc, err := c.Exec(ctx, p, libct.ExecOpts{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, ConsoleSocket: sock})
	if err != nil {
		return 0, err
	}
	if proc.Console != nil {
		proc.Console.Close()
	}
	return proc.Pid, nil
}

// Pause implements Driver.
func (n *Native) Pause(ctx context.Context, id string) error {
	c, err := n.load(id)
	if err != nil {
		return err
	}
	return c.Pause()
}

// Resume implements Driver.
func (n *Native) Resume(ctx context.Context, id string) error {
	c, err := n.load(id)
	if err != nil {
		return err
	}
	return c.Resume()
}

// Update implements Driver.
func (n *Native) Update(ctx context.Context, id string, r *specs.LinuxResources) error {
	c, err := n.load(id)
	if err != nil {
		return err
	}
	return c.Update(r)
}

// Stats implements Driver.
func (n *Native) Stats(ctx context.Context, id string) (*libct.Stats, error) {
	c, err := n.load(id)
	if err != nil {
		return nil, err
	}
	return c.Stats()
}

// Pids implements Driver.
func (n *Native) Pids(ctx context.Context, id string) ([]int, error) {
	c, err := n.load(id)
	if err != nil {
		return nil, err
	}
	return c.Processes()
}
