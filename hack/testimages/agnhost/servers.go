package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// liveness serves on :8080: /healthz answers 200 "ok" for the first 10 s
// after start and 500 after that; /started the time since start;
// /redirect?loc=URL a 302 to URL.
func liveness(args []string) error {
	if err := parseFlags(newFlags("liveness"), args); err != nil {
		return err
	}
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/started", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, time.Since(started).String())
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if d := time.Since(started); d > 10*time.Second {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "error: %v", d.Seconds())
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		loc, err := url.QueryUnescape(r.URL.Query().Get("loc"))
		if err != nil {
			http.Error(w, fmt.Sprintf("invalid redirect: %q", r.URL.Query().Get("loc")), http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, loc, http.StatusFound)
	})
	return http.ListenAndServe(":8080", mux)
}

// testWebserver serves the container's whole file system read-only over
// HTTP on --port, without conditional requests.
func testWebserver(args []string) error {
	fs := newFlags("test-webserver")
	port := fs.Int("port", 80, "port to serve on")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	files := http.FileServer(http.Dir("/"))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private")
		r.Header.Del("If-Modified-Since")
		files.ServeHTTP(w, r)
	})
	return http.ListenAndServe(":"+strconv.Itoa(*port), h)
}

// grpcHealthChecking serves the gRPC health service (grpc.health.v1) on
// --port: SERVING for --service until --delay-unhealthy-sec have passed (or
// forever when negative), NOT_SERVING after; NotFound for another service
// name. On --http-port, /make-not-serving and /make-serving force the state.
func grpcHealthChecking(args []string) error {
	fs := newFlags("grpc-health-checking")
	port := fs.Int("port", 5000, "gRPC port")
	httpPort := fs.Int("http-port", 8080, "port of /make-serving and /make-not-serving")
	delay := fs.Int("delay-unhealthy-sec", -1, "seconds before answering NOT_SERVING; negative: never")
	service := fs.String("service", "", "the service name to answer for")
	cert := fs.String("tls-cert-file", "", "TLS certificate (not supported by this stand-in)")
	key := fs.String("tls-private-key-file", "", "TLS key (not supported by this stand-in)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cert != "" || *key != "" {
		return fmt.Errorf("--tls-cert-file/--tls-private-key-file: gRPC over TLS is not implemented by this stand-in")
	}
	hc := &healthChecker{started: time.Now(), service: *service, delay: *delay}
	mux := http.NewServeMux()
	mux.HandleFunc("/make-not-serving", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("Mark as unhealthy")
		hc.force.Store(forcedNotServing)
		fmt.Fprint(w, time.Since(hc.started).String())
	})
	mux.HandleFunc("/make-serving", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("Mark as healthy")
		hc.force.Store(forcedServing)
		fmt.Fprint(w, time.Since(hc.started).String())
	})
	go func() { log.Fatal(http.ListenAndServe(":"+strconv.Itoa(*httpPort), mux)) }()
	l, err := net.Listen("tcp", ":"+strconv.Itoa(*port))
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	grpc_health_v1.RegisterHealthServer(s, hc)
	log.Printf("gRPC health server listening on %s", l.Addr())
	return s.Serve(l)
}

const (
	notForced int32 = iota
	forcedServing
	forcedNotServing
)

type healthChecker struct {
	grpc_health_v1.UnimplementedHealthServer
	started time.Time
	service string
	delay   int
	force   atomic.Int32
}

func (h *healthChecker) Check(ctx context.Context, req *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	log.Printf("Check request for %q, started at %v", req.GetService(), h.started)
	if req.GetService() != h.service {
		return nil, status.Errorf(codes.NotFound, "unknown service")
	}
	st := grpc_health_v1.HealthCheckResponse_SERVING
	switch h.force.Load() {
	case forcedNotServing:
		st = grpc_health_v1.HealthCheckResponse_NOT_SERVING
	case notForced:
		if h.delay >= 0 && time.Since(h.started) >= time.Duration(h.delay)*time.Second {
			st = grpc_health_v1.HealthCheckResponse_NOT_SERVING
		}
	}
	return &grpc_health_v1.HealthCheckResponse{Status: st}, nil
}
