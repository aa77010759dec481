package libct

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// ociStateOf is the state a hook reads on stdin.
func ociStateOf(s State) []byte {
	b, _ := json.Marshal(specs.State{
		Version: specs.Version, ID: s.ID, Status: specs.ContainerState(s.Status), Pid: s.Pid,
		Bundle: s.Bundle, Annotations: s.Annotations,
	})
	return b
}

// RunHooks runs hooks in order with the container state on stdin. With
// keepGoing every hook runs and failures are only returned (poststop).
func RunHooks(ctx context.Context, hooks []specs.Hook, st State, keepGoing bool) error {
	var first error
	for _, h := range hooks {
		if err := runHook(ctx, h, ociStateOf(st)); err != nil {
			if !keepGoing {
				return err
			}
			if first == nil {
				first = err
			}
		}
	}
	return first
}

func runHook(ctx context.Context, h specs.Hook, state []byte) error {
	if h.Timeout != nil {
		if *h.Timeout <= 0 {
			return fmt.Errorf("hook %s: timeout must be positive: %w", h.Path, errdefs.ErrInvalidArgument)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	cmd.Env = h.Env
	cmd.Stdin = bytes.NewReader(state)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := out.String()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		if ctx.Err() != nil {
			return fmt.Errorf("hook %s timed out: %w", h.Path, errdefs.ErrAborted)
		}
		return fmt.Errorf("hook %s: %v: %s: %w", h.Path, err, msg, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func hasCreateHooks(h *specs.Hooks) bool {
	return h != nil && (len(h.Prestart) > 0 || len(h.CreateRuntime) > 0 || len(h.CreateContainer) > 0) //nolint:staticcheck // prestart is deprecated but still in use
}
