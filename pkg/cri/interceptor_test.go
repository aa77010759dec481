package cri

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// fakeRuntime answers Version by panicking or failing as told.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	err   error
	panic bool
	env   map[string]string
}

func (f *fakeRuntime) Version(ctx context.Context, _ *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	if f.panic {
		var m map[string]int
		m["boom"]++
	}
	e, _ := engine.New(engine.Options{})
	h := engine.Register(e, "probe", engine.Spec[struct{}, struct{}]{Run: func(ctx context.Context, j *engine.Job, _ struct{}) (struct{}, error) {
		return struct{}{}, nil
	}})
	h.Run(ctx, struct{}{})
	f.env = e.Jobs()[0].Env
	return &runtimeapi.VersionResponse{}, f.err
}

func serveFake(t *testing.T, f *fakeRuntime) (runtimeapi.RuntimeServiceClient, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	icpt, err := NewInterceptor(reg)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(icpt.ServerOptions()...)
	runtimeapi.RegisterRuntimeServiceServer(g, f)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn), reg
}

func TestInterceptorMapsClasses(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("x: %w", errdefs.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("x: %w", errdefs.ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("no class"), codes.Unknown},
	} {
		f := &fakeRuntime{err: tc.err}
		c, _ := serveFake(t, f)
		_, err := c.Version(context.Background(), &runtimeapi.VersionRequest{})
		if status.Code(err) != tc.code {
			t.Errorf("%v: got code %v, want %v", tc.err, status.Code(err), tc.code)
		}
		if f.env["request_id"] == "" || f.env["method"] != "/runtime.v1.RuntimeService/Version" {
			t.Errorf("job env %v lacks request id or method", f.env)
		}
	}
}

func TestInterceptorRecoversPanics(t *testing.T) {
	c, reg := serveFake(t, &fakeRuntime{panic: true})
	_, err := c.Version(context.Background(), &runtimeapi.VersionRequest{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panic gave %v, want Internal", err)
	}
	// The server survived and records durations per method and code.
	if _, err := c.Status(context.Background(), &runtimeapi.StatusRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("after panic: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, "shim_grpc_request_duration_seconds"); err != nil || n != 2 {
		t.Fatalf("histogram series %d %v, want 2", n, err)
	}
}
