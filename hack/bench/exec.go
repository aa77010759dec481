package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Exec modes, on one pod per target started at set-up and removed at the
// end:
//
//	exec               ExecSync of `true`
//	exec-stream        Exec of `true` through the streaming server (the
//	                   Exec call for the URL, then the SPDY session, with
//	                   client-go's remotecommand client, like kubectl)
//	stream-throughput  Exec of `cat` of a 256 MiB file through the streaming
//	                   server: MiB/s of stdout received
//
// Every target is measured the same way over the CRI, so the modes run
// against containerd too.

// throughputBytes is the size of the file the throughput mode cats.
const throughputBytes = 256 << 20

func setupExec(ctx context.Context, b *bench, t *target) error {
	if err := setupPods(ctx, b, t); err != nil {
		return err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	p, _, err := t.startPod(cctx, b.Pod, b.podName(t, 0, 0))
	if err != nil {
		return err
	}
	t.execPod = &p
	if b.Mode == "stream-throughput" {
		cmd := []string{"sh", "-c", fmt.Sprintf("head -c %d /dev/zero > /tmp/bench-big", throughputBytes)}
		r, err := t.rt.ExecSync(cctx, &runtimeapi.ExecSyncRequest{ContainerId: p.CtrID, Cmd: cmd, Timeout: 120})
		if err != nil {
			return t.wrap("ExecSync", err)
		}
		if r.GetExitCode() != 0 {
			return fmt.Errorf("%s: making the file to cat: exit %d: %s", t.Name, r.GetExitCode(), r.GetStderr())
		}
	}
	return nil
}

func teardownExec(ctx context.Context, b *bench, t *target) error {
	if t.execPod == nil {
		return nil
	}
	rctx, cancel := cleanupCtx(ctx)
	defer cancel()
	err := t.removePod(rctx, *t.execPod)
	t.execPod = nil
	return err
}

func roundExecSync(ctx context.Context, b *bench, t *target, _ int) (sample, error) {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	t0 := time.Now()
	r, err := t.rt.ExecSync(cctx, &runtimeapi.ExecSyncRequest{ContainerId: t.execPod.CtrID, Cmd: []string{"true"}, Timeout: 60})
	d := time.Since(t0)
	if err != nil {
		return sample{}, t.wrap("ExecSync", err)
	}
	if r.GetExitCode() != 0 {
		return sample{}, fmt.Errorf("%s: ExecSync true: exit %d", t.Name, r.GetExitCode())
	}
	return sample{Metrics: map[string]float64{"exec_ms": ms(d)}}, nil
}

// streamExec runs cmd through the streaming server with stdout to out.
func (t *target) streamExec(ctx context.Context, cmd []string, out io.Writer) error {
	r, err := t.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: t.execPod.CtrID, Cmd: cmd, Stdout: true, Stderr: true})
	if err != nil {
		return t.wrap("Exec", err)
	}
	u, err := url.Parse(r.GetUrl())
	if err != nil {
		return fmt.Errorf("%s: exec URL %q: %w", t.Name, r.GetUrl(), err)
	}
	e, err := remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
	if err != nil {
		return err
	}
	if err := e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: out, Stderr: io.Discard}); err != nil {
		return fmt.Errorf("%s: exec %v: %w", t.Name, cmd, err)
	}
	return nil
}

func roundExecStream(ctx context.Context, b *bench, t *target, _ int) (sample, error) {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	t0 := time.Now()
	if err := t.streamExec(cctx, []string{"true"}, io.Discard); err != nil {
		return sample{}, err
	}
	return sample{Metrics: map[string]float64{"exec_stream_ms": ms(time.Since(t0))}}, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func roundStreamThroughput(ctx context.Context, b *bench, t *target, _ int) (sample, error) {
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	var c countWriter
	t0 := time.Now()
	if err := t.streamExec(cctx, []string{"cat", "/tmp/bench-big"}, &c); err != nil {
		return sample{}, err
	}
	d := time.Since(t0)
	if c.n != throughputBytes {
		return sample{}, fmt.Errorf("%s: cat gave %d bytes, want %d", t.Name, c.n, throughputBytes)
	}
	return sample{Metrics: map[string]float64{
		"throughput_mibs": float64(c.n) / (1 << 20) / d.Seconds(),
		"stream_ms":       ms(d),
	}}, nil
}
