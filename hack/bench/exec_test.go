package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/streamsrv"
)

func (f *fakeCRI) ExecSync(_ context.Context, r *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	f.record("execsync:" + strings.Join(r.GetCmd(), " "))
	return &runtimeapi.ExecSyncResponse{}, nil
}

// fakeStreams is the streaming server of each fake that serves Exec.
var fakeStreams sync.Map // *fakeCRI -> *streamsrv.Server

func (f *fakeCRI) Exec(_ context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	f.record("exec:" + strings.Join(r.GetCmd(), " "))
	s, _ := fakeStreams.Load(f)
	return s.(*streamsrv.Server).GetExec(r)
}

// fakeExecs plays the runtime behind a real streaming server: cat gives
// throughputBytes, anything else nothing.
type fakeExecs struct{}

func (fakeExecs) RunExec(ctx context.Context, req engine.ExecStreamRequest) (int, error) {
	if req.Cmd[0] == "cat" {
		buf := make([]byte, 1<<20)
		for n := 0; n < throughputBytes; n += len(buf) {
			if _, err := req.Stdout.Write(buf); err != nil {
				return 0, err
			}
		}
	}
	return 0, nil
}
func (fakeExecs) RunAttach(context.Context, engine.AttachStreamRequest) error { return nil }
func (fakeExecs) RunPortForward(context.Context, engine.PortForwardStreamRequest) error {
	return nil
}

func TestExecModes(t *testing.T) {
	for _, m := range []struct{ mode, metric, call string }{
		{"exec", "exec_ms", "rt:execsync:true"},
		{"exec-stream", "exec_stream_ms", "rt:exec:true"},
		{"stream-throughput", "throughput_mibs", "rt:exec:cat /tmp/bench-big"},
	} {
		t.Run(m.mode, func(t *testing.T) {
			var log []string
			f := &fakeCRI{name: "rt", log: &log}
			srv, err := streamsrv.New(context.Background(), streamsrv.Config{Address: "127.0.0.1:0", IdleTimeout: time.Minute}, fakeExecs{})
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve()
			defer srv.Stop(context.Background())
			fakeStreams.Store(f, srv)
			ep := serveFake(t, f)
			rc, recs, stderr := runBench(t, "-mode", m.mode, "-n", "2", "-warmup", "1", "-endpoint", ep, "-log-root", t.TempDir())
			if rc != 0 {
				t.Fatalf("exit %d: %s", rc, stderr)
			}
			samples := ofType(recs, "sample")
			if len(samples) != 2 {
				t.Fatalf("%d samples", len(samples))
			}
			for _, s := range samples {
				if s.Metrics[m.metric] <= 0 {
					t.Errorf("sample %v", s.Metrics)
				}
			}
			if got := strings.Count(strings.Join(log, " "), m.call); got != 3 {
				t.Errorf("%d calls %q in %v", got, m.call, log)
			}
			if strings.Count(strings.Join(log, " "), "rt:runpod") != 1 || len(f.pods) != 0 || len(f.ctrs) != 0 {
				t.Errorf("one pod for the run, removed at the end: %v; left %v %v", log, f.pods, f.ctrs)
			}
		})
	}
}
