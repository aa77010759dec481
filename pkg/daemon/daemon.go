// Package daemon wires shim together: configuration, stores, engine, CRI
// server, listeners and the admin endpoint, and runs it until a signal.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/cgstats"
	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/cri"
	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv/specgen"
	"github.com/shim-cri/shim/pkg/imagestore"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/native"
	"github.com/shim-cri/shim/pkg/snapshot/overlay"
	"github.com/shim-cri/shim/pkg/streamsrv"
)

// AdminSocket is the admin endpoint's name under the state directory.
const AdminSocket = "admin.sock"

// Options are what the binary gives the daemon besides its config.
type Options struct {
	Version string
	// RuntimeBinary is the lean monitor/init binary (cmd/shim-runtime)
	// embedded in the shim binary; empty: monitors run this executable.
	RuntimeBinary []byte
	// InitBinary is the container init binary (cmd/shim-init) embedded
	// beside it; empty: monitors run the runtime binary as the init.
	InitBinary []byte
}

// Daemon is a configured, running shim.
type Daemon struct {
	cfg     *config.Config
	version string
	net     netdrv.Driver
	rt      *engine.RuntimeJobs

	db     *bolt.DB
	sn     snapshot.Snapshotter
	images *imagestore.Store
	engine *engine.Engine
	grpc   *grpc.Server
	reg    *prometheus.Registry

	criListener net.Listener
	httpServers []*http.Server
	metricsAddr net.Addr
	streams     *streamsrv.Server
	lsm         lsmStatus
}

// New opens the stores and builds the servers; Serve starts them.
func New(ctx context.Context, cfg *config.Config, o Options) (_ *Daemon, retErr error) {
	start := time.Now()
	version := o.Version
	d := &Daemon{cfg: cfg, version: version}
	defer func() {
		if retErr != nil {
			d.close()
		}
	}()
	if err := d.openStore(ctx); err != nil {
		return nil, err
	}
	var err error
	d.reg = prometheus.NewRegistry()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if d.engine, err = engine.New(engine.Options{History: cfg.JobHistory, Registry: d.reg}); err != nil {
		return nil, err
	}
	images := engine.RegisterImages(d.engine, d.images, cfg.Root)
	if d.net, err = newNetwork(ctx, cfg, d.db); err != nil {
		return nil, err
	}
	exe, err := runtimeExe(cfg.State, o.RuntimeBinary)
	if err != nil {
		return nil, err
	}
	initExe, err := unpackBinary(cfg.State, "shim-init", o.InitBinary)
	if err != nil {
		return nil, err
	}
	handlers := map[string]string{}
	for name, h := range cfg.Runtime.Handlers {
		handlers[name] = h.Binary
	}
	specOpts := specgen.DetectHost()
	specOpts.SeccompDefault = cfg.Runtime.SeccompDefault
	specOpts.AppArmorDefaultProfile = appArmorDefault(ctx, cfg.Runtime.AppArmorDefaultProfile)
	d.lsm = lsmStatus{LSMSupport: libct.HostLSM(), AppArmorDefaultProfile: specOpts.AppArmorDefaultProfile}
	rt, err := engine.RegisterRuntime(ctx, d.engine, engine.RuntimeOptions{
		State: cfg.State, Root: cfg.Root, RuntimeExe: exe, InitExe: initExe, DB: d.db, Images: d.images, Snapshotter: d.sn, Network: d.net,
		Handlers: handlers, SandboxImage: cfg.Image.SandboxImage, LogLevel: cfg.LogLevel,
		Spec: specOpts,
	})
	if err != nil {
		return nil, err
	}
	d.rt = rt
	cg, err := cgstats.New()
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	stats := engine.RegisterStats(d.engine, rt, engine.StatsOptions{Cgroups: cg, FsMountpoint: cfg.Root})
	if cfg.Stats.ContainerMetrics {
		d.reg.MustRegister(stats.PrometheusCollector())
	}
	icpt, err := cri.NewInterceptor(d.reg)
	if err != nil {
		return nil, err
	}
	// kubelet sends and accepts messages up to 16 MiB (an env-heavy
	// CreateContainer); ExecSync answers can carry 2 × 16 MiB of output.
	d.grpc = grpc.NewServer(append(icpt.ServerOptions(),
		grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(64<<20))...)
	criServer := cri.NewServer(cri.Info{
		Version:      version,
		CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS,
		StatusInfo:   d.statusInfo,
	}, d.engine, images, rt).WithStats(stats)
	if err := d.startStreaming(ctx, criServer, rt); err != nil {
		return nil, err
	}
	criServer.Register(d.grpc)

	if err := d.listen(); err != nil {
		return nil, err
	}
	log.G(ctx).WithField(log.FieldDuration, time.Since(start).Round(time.Microsecond).String()).
		Infof("shim %s ready: root %s, state %s, snapshotter %s, %d images", version, cfg.Root, cfg.State, cfg.Image.Snapshotter, len(d.images.List(ctx)))
	return d, nil
}

// openStore creates the root and state directories and opens meta.db,
// the snapshotter and the image store.
func (d *Daemon) openStore(ctx context.Context) error {
	cfg := d.cfg
	for _, dir := range []string{cfg.Root, cfg.State} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return err
		}
	}
	var err error
	d.db, err = bolt.Open(filepath.Join(cfg.Root, "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("another shim is using %s (meta.db is locked): %w", cfg.Root, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("opening meta.db: %w", err)
	}
	if d.sn, err = newSnapshotter(ctx, cfg, d.db); err != nil {
		return err
	}
	pinned := append([]string{}, cfg.Image.PinnedImages...)
	if cfg.Image.SandboxImage != "" {
		pinned = append(pinned, cfg.Image.SandboxImage)
	}
	d.images, err = imagestore.New(ctx, imagestore.Config{
		// The runtime is wired after the store: until then no container
		// holds a snapshot.
		SnapshotRoots: func(ctx context.Context) ([]string, error) {
			if d.rt == nil {
				return nil, nil
			}
			return d.rt.SnapshotRoots(ctx)
		},
		ContentRoot:          filepath.Join(cfg.Root, "content"),
		DB:                   d.db,
		Snapshotter:          d.sn,
		RegistryConfigDir:    cfg.Image.RegistryConfig,
		Downloads:            cfg.Image.MaxConcurrentDownloads,
		KeepLayerBlobs:       cfg.Image.KeepLayerBlobs,
		Pinned:               pinned,
		IngestExpiry:         time.Duration(cfg.Image.IngestExpiry),
		MaxUnpackedLayerSize: int64(cfg.Image.MaxUnpackedLayerSize),
	})
	return err
}

// listen opens the CRI listener, the admin socket and, when configured,
// the metrics listener, and serves HTTP on the last two.
func (d *Daemon) listen() error {
	cfg := d.cfg
	var err error
	if d.criListener, err = Listen(cfg.Listen, cfg.TLS); err != nil {
		return err
	}
	admin, err := ListenUnix(filepath.Join(cfg.State, AdminSocket), 0o600)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	d.serveHTTP(admin, d.AdminHandler())
	if cfg.Metrics != "" {
		l, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		d.metricsAddr = l.Addr()
		d.serveHTTP(l, d.MetricsHandler())
	}
	return nil
}

// startStreaming starts the CRI streaming server (Exec, Attach,
// PortForward) with its sessions run as engine jobs.
func (d *Daemon) startStreaming(ctx context.Context, criServer *cri.Server, rt *engine.RuntimeJobs) error {
	jobs := engine.RegisterStreams(d.engine, rt.Runtime)
	sc := d.cfg.Streaming
	s, err := streamsrv.New(ctx, streamsrv.Config{Address: sc.Address, TLSCert: sc.TLS.Cert, TLSKey: sc.TLS.Key,
		IdleTimeout: time.Duration(sc.IdleTimeout)}, jobs)
	if err != nil {
		return err
	}
	d.streams = s
	jobs.SetURLs(s)
	criServer.SetStreams(jobs)
	go func() {
		if err := s.Serve(); err != nil {
			log.G(ctx).WithError(err).Error("streaming server stopped")
		}
	}()
	log.G(ctx).Infof("streaming server on %s", s.URL())
	return nil
}

func newSnapshotter(ctx context.Context, cfg *config.Config, db *bolt.DB) (snapshot.Snapshotter, error) {
	// Drivers keep <root>/snapshots/<id>/fs; a root belongs to one driver.
	root := cfg.Root
	switch cfg.Image.Snapshotter {
	case "overlay":
		return overlay.New(ctx, root, db)
	case "native":
		return native.New(ctx, root, db)
	}
	return nil, fmt.Errorf("unknown snapshotter %q: %w", cfg.Image.Snapshotter, errdefs.ErrInvalidArgument)
}

func (d *Daemon) statusInfo() map[string]string {
	b, _ := json.Marshal(d.cfg)
	lsm, _ := json.Marshal(d.lsm)
	return map[string]string{"config": string(b), "version": d.version, "lsm": string(lsm)}
}

// lsmStatus is what Status reports of the host's security modules.
type lsmStatus struct {
	libct.LSMSupport
	// AppArmorDefaultProfile is the profile RuntimeDefault applies; ""
	// when it is not loaded (RuntimeDefault is then unconfined).
	AppArmorDefaultProfile string `json:"apparmor_default_profile"`
}

// appArmorDefault is the RuntimeDefault AppArmor profile: name when the
// host has it loaded, "" (unconfined) otherwise.
func appArmorDefault(ctx context.Context, name string) string {
	lsm := libct.HostLSM()
	switch {
	case name == "":
		return ""
	case !lsm.AppArmor:
		log.G(ctx).Infof("AppArmor is not enabled on this host: RuntimeDefault containers run unconfined, Localhost profiles are refused")
		return ""
	case !libct.AppArmorProfileLoaded(name):
		log.G(ctx).Warnf("AppArmor profile %q is not loaded: RuntimeDefault containers run unconfined", name)
		return ""
	}
	return name
}

// AdminHandler serves /metrics, /jobs and /debug/pprof/, for the admin
// socket (0600): jobs name images and pods and carry their errors, and
// profiles show what the daemon runs.
func (d *Daemon) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	mux.Handle("/jobs", d.engine)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/pprof/block", sampledWhileProfiled(runtime.SetBlockProfileRate, 10000, pprof.Handler("block")))
	mux.Handle("/debug/pprof/mutex", sampledWhileProfiled(func(r int) { runtime.SetMutexProfileFraction(r) }, 10, pprof.Handler("mutex")))
	return mux
}

// profileMu serializes the block and mutex profiles: each turns its
// sampling on for its duration only.
var profileMu sync.Mutex

// sampledWhileProfiled serves a block or mutex profile, which Go records
// only while its rate is set: the request must give ?seconds=N, and the
// rate is on for those seconds (a delta profile), off otherwise, so the
// daemon pays for the sampling only while someone profiles it.
func sampledWhileProfiled(set func(int), rate int, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sec, err := strconv.Atoi(r.URL.Query().Get("seconds")); err != nil || sec <= 0 {
			http.Error(w, "block and mutex profiles are sampled only while taken: give ?seconds=N", http.StatusBadRequest)
			return
		}
		profileMu.Lock()
		defer profileMu.Unlock()
		set(rate)
		defer set(0)
		h.ServeHTTP(w, r)
	})
}

// MetricsHandler serves /metrics only, for the unauthenticated TCP
// metrics listener.
func (d *Daemon) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	return mux
}

// MetricsAddr is the address of the TCP metrics listener; nil without one.
func (d *Daemon) MetricsAddr() net.Addr { return d.metricsAddr }

func (d *Daemon) serveHTTP(l net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	d.httpServers = append(d.httpServers, s)
	go s.Serve(l)
}

// Address is where the CRI server listens.
func (d *Daemon) Address() string {
	if d.criListener.Addr().Network() == "unix" {
		return "unix://" + d.criListener.Addr().String()
	}
	return d.cfg.Listen
}

// Serve serves CRI until ctx is done, then shuts down: it stops accepting,
// lets running jobs finish within the grace period, cancels the rest and
// closes the stores.
func (d *Daemon) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- d.grpc.Serve(d.criListener) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	return errors.Join(serveErr, d.shutdown(context.WithoutCancel(ctx)))
}

func (d *Daemon) shutdown(ctx context.Context) error {
	grace := time.Duration(d.cfg.ShutdownGrace)
	log.G(ctx).Infof("shutting down: %s for running jobs", grace)
	// Streams end first (their processes with them; containers go on):
	// they would hold the grace period for nothing.
	d.stopStreaming(ctx)
	stopped := make(chan struct{})
	go func() { d.grpc.GracefulStop(); close(stopped) }()
	gctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	err := d.engine.Shutdown(gctx)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		d.grpc.Stop()
	}
	for _, s := range d.httpServers {
		s.Close()
	}
	d.close()
	if d.cfg.Listen != "" && strings.HasPrefix(d.cfg.Listen, "unix://") {
		os.Remove(strings.TrimPrefix(d.cfg.Listen, "unix://"))
	}
	os.Remove(filepath.Join(d.cfg.State, AdminSocket))
	log.G(ctx).Info("shim stopped")
	return err
}

func (d *Daemon) stopStreaming(ctx context.Context) {
	if d.streams == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d.streams.Stop(sctx); err != nil {
		log.G(ctx).WithError(err).Warn("stopping the streaming server")
	}
	d.streams = nil
}

func (d *Daemon) close() {
	d.stopStreaming(context.Background())
	for _, s := range d.httpServers {
		s.Close()
	}
	if d.images != nil {
		// Waits for the image store's background work (a collection
		// after a pull) before the database it uses is closed.
		d.images.Close()
	}
	if d.rt != nil {
		d.rt.Close()
	}
	if d.net != nil {
		d.net.Close()
	}
	if d.criListener != nil {
		d.criListener.Close()
	}
	if d.sn != nil {
		d.sn.Close()
	}
	if d.db != nil {
		d.db.Close()
	}
}
