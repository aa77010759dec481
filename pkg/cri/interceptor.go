package cri

import (
	"context"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/errdefs/errgrpc"
	"github.com/shim-cri/shim/pkg/log"
)

// Interceptor is the one place every RPC passes: it gives the call a
// request id and a logger, recovers panics into Internal errors, maps error
// classes to gRPC codes and records the duration per method.
type Interceptor struct {
	seq      atomic.Uint64
	duration *prometheus.HistogramVec
}

// NewInterceptor registers its metrics on reg (nil for none).
func NewInterceptor(reg prometheus.Registerer) (*Interceptor, error) {
	i := &Interceptor{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "shim_grpc_request_duration_seconds",
		Help:    "CRI request durations by method and gRPC code.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 16),
	}, []string{"method", "code"})}
	if reg != nil {
		if err := reg.Register(i.duration); err != nil {
			return nil, err
		}
	}
	return i, nil
}

// ServerOptions returns the gRPC server options installing the interceptor.
func (i *Interceptor) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(i.unary), grpc.ChainStreamInterceptor(i.stream)}
}

func (i *Interceptor) begin(ctx context.Context, method string) (context.Context, *logrus.Entry) {
	id := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("x-request-id"); len(v) > 0 && len(v[0]) <= 128 {
			id = v[0]
		}
	}
	if id == "" {
		id = strconv.FormatUint(i.seq.Add(1), 10)
	}
	env := map[string]string{log.FieldRequestID: id, log.FieldMethod: method}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil && p.Addr.String() != "" && p.Addr.String() != "@" {
		env["peer"] = p.Addr.String()
	}
	l := log.G(ctx).WithFields(logrus.Fields{log.FieldRequestID: id, log.FieldMethod: method})
	ctx = log.WithLogger(ctx, l)
	return engine.WithEnv(ctx, env), l
}

func (i *Interceptor) end(l *logrus.Entry, method string, start time.Time, err error) error {
	err = errgrpc.ToGRPC(err)
	code := status.Code(err)
	d := time.Since(start)
	i.duration.WithLabelValues(method, code.String()).Observe(d.Seconds())
	l = l.WithFields(logrus.Fields{log.FieldDuration: d.Round(time.Microsecond).String(), "code": code.String()})
	switch code {
	case codes.OK, codes.NotFound:
		l.Debug("request done")
	default:
		l.WithError(err).Info("request failed")
	}
	return err
}

func (i *Interceptor) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	ctx, l := i.begin(ctx, info.FullMethod)
	defer func() {
		if r := recover(); r != nil {
			l.WithField("panic", r).Errorf("panic serving request:\n%s", debug.Stack())
			resp, err = nil, fmt.Errorf("panic serving %s: %v: %w", info.FullMethod, r, errdefs.ErrInternal)
		}
		err = i.end(l, info.FullMethod, start, err)
	}()
	return handler(ctx, req)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func (i *Interceptor) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	ctx, l := i.begin(ss.Context(), info.FullMethod)
	defer func() {
		if r := recover(); r != nil {
			l.WithField("panic", r).Errorf("panic serving stream:\n%s", debug.Stack())
			err = fmt.Errorf("panic serving %s: %v: %w", info.FullMethod, r, errdefs.ErrInternal)
		}
		err = i.end(l, info.FullMethod, start, err)
	}()
	return handler(srv, wrappedStream{ss, ctx})
}
