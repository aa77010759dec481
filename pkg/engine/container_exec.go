package engine

// Container exec: ExecSync runs a command in a running container through
// its pod's monitor (streaming exec is in stream.go).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/monitor"
)

// ExecSyncRequest runs a command in a container.
type ExecSyncRequest struct {
	ID      string
	Cmd     []string
	Timeout time.Duration
}

// ExecSyncResult is the command's output.
type ExecSyncResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

func (r *Runtime) execSync(ctx context.Context, j *Job, req ExecSyncRequest) (*ExecSyncResult, error) {
	c, err := r.getContainer(req.ID)
	if err != nil {
		return nil, err
	}
	if len(req.Cmd) == 0 {
		return nil, fmt.Errorf("exec without a command: %w", errdefs.ErrInvalidArgument)
	}
	r.refresh(ctx, c)
	if c.view().State != ContainerRunning {
		return nil, fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	proc, err := execProcess(c.Bundle, req.Cmd)
	if err != nil {
		return nil, err
	}
	mon, err := r.monitorOf(c)
	if err != nil {
		return nil, err
	}
	resp, err := mon.Call(ctx, &monitor.Request{Op: monitor.OpExecSync, ID: c.ID, Process: proc, Timeout: req.Timeout})
	if err != nil {
		return nil, err
	}
	if resp.Truncated {
		j.Logf("output truncated at 16 MiB per stream")
	}
	return &ExecSyncResult{Stdout: resp.Stdout, Stderr: resp.Stderr, ExitCode: int32(resp.ExitCode)}, nil
}

// execProcess is the container's process with another command.
func execProcess(bundle string, cmd []string) (*specs.Process, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("container config: %w: %w", err, errdefs.ErrDataLoss)
	}
	p := *spec.Process
	p.Args = cmd
	p.Terminal = false
	p.ConsoleSize = nil
	return &p, nil
}
