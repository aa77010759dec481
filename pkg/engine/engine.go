// Package engine runs every CRI call as a named job, the way Docker's
// engine ran "pull" and "create": a registry of typed handlers, per-object
// serialization, a record of running and recent jobs, and metrics.
package engine

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/timeline"
)

// Status of a job.
type Status string

const (
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
)

// maxJobLog caps the progress lines kept per job.
const maxJobLog = 64

// JobInfo is the record of one run of a handler.
type JobInfo struct {
	ID       uint64            `json:"id"`
	Name     string            `json:"name"`
	Object   string            `json:"object,omitempty"`
	Args     map[string]string `json:"args,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Status   Status            `json:"status"`
	Error    string            `json:"error,omitempty"`
	Class    string            `json:"errorClass,omitempty"`
	Start    time.Time         `json:"start"`
	Duration time.Duration     `json:"durationNs"`
	Log      []string          `json:"log,omitempty"`
	// Phases: where a timed job's time went (Spec.Timeline).
	Phases []timeline.Phase `json:"phases,omitempty"`
}

// Job is one run of a handler, as its handler sees it.
type Job struct {
	JobInfo

	mu     sync.Mutex
	cancel context.CancelFunc
	quiet  bool
	tl     *timeline.Timeline // timed jobs only; guarded by mu
	logger *logrus.Entry
}

// Mark ends phase name of a timed job's timeline (see PhaseLock and the
// README's phase table); it does nothing in other jobs. Drivers reach it
// through the context: timeline.Mark(ctx, name).
func (j *Job) Mark(name string) {
	if j.tl == nil {
		return
	}
	j.mu.Lock()
	j.tl.Mark(name)
	j.mu.Unlock()
}

// Add appends a phase another process measured (timeline.Add) to a timed
// job's timeline.
func (j *Job) Add(name string, d time.Duration) {
	if j.tl == nil {
		return
	}
	j.mu.Lock()
	j.tl.Add(name, d)
	j.mu.Unlock()
}

// Timeline returns a copy of the job's timeline so far (nil for an
// untimed job).
func (j *Job) Timeline() *timeline.Timeline {
	if j.tl == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	c := *j.tl
	return &c
}

// PhaseLock is the first phase of a timed job with an object: waiting
// for the object's lock (a job of the same object running).
const PhaseLock = "lock"

// Logf records a progress line in the job and logs it.
func (j *Job) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	j.mu.Lock()
	if len(j.Log) < maxJobLog {
		j.Log = append(j.Log, time.Since(j.Start).Round(time.Millisecond).String()+" "+line)
	}
	j.mu.Unlock()
	if j.quiet {
		j.logger.Debug(line)
	} else {
		j.logger.Info(line)
	}
}

func (j *Job) snapshot() JobInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	c := JobInfo{
		ID: j.ID, Name: j.Name, Object: j.Object, Args: maps.Clone(j.Args), Env: maps.Clone(j.Env),
		Status: j.Status, Error: j.Error, Class: j.Class, Start: j.Start, Duration: j.Duration,
		Log: append([]string(nil), j.Log...),
	}
	if j.tl != nil {
		c.Phases = j.tl.Phases()
	}
	if c.Status == StatusRunning {
		c.Duration = time.Since(j.Start)
	}
	return c
}

type jobKey struct{}

// JobFrom returns the job ctx runs in, or nil.
func JobFrom(ctx context.Context) *Job {
	j, _ := ctx.Value(jobKey{}).(*Job)
	return j
}

type envKey struct{}

// WithEnv attaches request metadata (request id, peer) that jobs started
// with ctx record in their Env.
func WithEnv(ctx context.Context, env map[string]string) context.Context {
	return context.WithValue(ctx, envKey{}, env)
}

// Options configure an Engine.
type Options struct {
	History  int                   // finished jobs kept; default 256
	Registry prometheus.Registerer // where job metrics go; nil for none
}

// Engine is the job registry and runner.
type Engine struct {
	history int

	mu       sync.Mutex
	handlers map[string]bool
	running  map[uint64]*Job
	done     []*Job // ring of finished jobs, oldest first
	closed   bool
	wg       sync.WaitGroup

	nextID atomic.Uint64
	locks  keyLocks

	jobsTotal   *prometheus.CounterVec
	jobDuration *prometheus.HistogramVec
	jobsRunning *prometheus.GaugeVec
	jobPhase    *prometheus.HistogramVec
}

// New returns an engine with no handlers.
func New(o Options) (*Engine, error) {
	if o.History <= 0 {
		o.History = 256
	}
	e := &Engine{
		history:  o.History,
		handlers: map[string]bool{},
		running:  map[uint64]*Job{},
		jobsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shim_jobs_total", Help: "Jobs run, by job name and outcome (error class).",
		}, []string{"job", "outcome"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shim_job_duration_seconds",
			Help:    "Job durations, by job name and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 16),
		}, []string{"job", "outcome"}),
		jobsRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shim_jobs_running", Help: "Jobs running now, by job name.",
		}, []string{"job"}),
		jobPhase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shim_job_phase_seconds",
			Help:    "Phases of successful timed jobs (run_pod, create, start), by job name and phase.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}, []string{"job", "phase"}),
	}
	if o.Registry != nil {
		for _, c := range []prometheus.Collector{e.jobsTotal, e.jobDuration, e.jobsRunning, e.jobPhase} {
			if err := o.Registry.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return e, nil
}

// Handler is a registered job: Run executes it.
type Handler[Req, Resp any] struct {
	e      *Engine
	name   string
	quiet  bool
	timed  bool
	object func(Req) string
	args   func(Req) map[string]string
	fn     func(context.Context, *Job, Req) (Resp, error)
}

// Spec describes a handler at registration.
type Spec[Req, Resp any] struct {
	// Object names what the job works on ("image:...", "pod:..."); jobs
	// with the same object run one at a time. nil or "" for no lock.
	Object func(Req) string
	// Args renders the request for the job record.
	Args func(Req) map[string]string
	// Quiet jobs (reads, polled by kubelet) log at debug level.
	Quiet bool
	// Timeline: the job records its phases (Job.Mark), kept in its
	// record, observed in shim_job_phase_seconds and logged at debug.
	Timeline bool
	Run      func(context.Context, *Job, Req) (Resp, error)
}

// Register adds handler name to e. Names are unique.
func Register[Req, Resp any](e *Engine, name string, s Spec[Req, Resp]) *Handler[Req, Resp] {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.handlers[name] {
		panic("engine: handler " + name + " registered twice")
	}
	e.handlers[name] = true
	return &Handler[Req, Resp]{e: e, name: name, quiet: s.Quiet, timed: s.Timeline, object: s.Object, args: s.Args, fn: s.Run}
}

// Handlers lists the registered job names.
func (e *Engine) Handlers() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.handlers))
	for n := range e.handlers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ErrShuttingDown is returned for jobs started after Shutdown began.
var ErrShuttingDown = fmt.Errorf("shim is shutting down: %w", errdefs.ErrUnavailable)

// Run runs the handler as a job.
func (h *Handler[Req, Resp]) Run(ctx context.Context, req Req) (resp Resp, retErr error) {
	e := h.e
	j := &Job{
		JobInfo: JobInfo{ID: e.nextID.Add(1), Name: h.name, Status: StatusRunning, Start: time.Now()},
		quiet:   h.quiet,
	}
	if h.timed {
		j.tl = &timeline.Timeline{}
		j.tl.Begin(j.Start)
	}
	if h.object != nil {
		j.Object = h.object(req)
	}
	if h.args != nil {
		j.Args = h.args(req)
	}
	if env, ok := ctx.Value(envKey{}).(map[string]string); ok {
		j.Env = env
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.cancel = cancel
	fields := logrus.Fields{log.FieldJob: h.name, log.FieldJobID: j.ID}
	if j.Object != "" {
		fields["object"] = j.Object
	}
	j.logger = log.G(ctx).WithFields(fields)
	ctx = log.WithLogger(ctx, j.logger)
	ctx = context.WithValue(ctx, jobKey{}, j)
	if j.tl != nil {
		ctx = timeline.With(ctx, j)
	}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return resp, ErrShuttingDown
	}
	e.running[j.ID] = j
	e.wg.Add(1)
	e.mu.Unlock()
	e.jobsRunning.WithLabelValues(h.name).Inc()
	defer func() {
		if r := recover(); r != nil {
			retErr = fmt.Errorf("job %s panicked: %v: %w", h.name, r, errdefs.ErrInternal)
			j.logger.WithField("panic", r).Error("job panicked")
		}
		e.finish(j, retErr)
	}()

	if j.Object != "" {
		unlock, err := e.locks.lock(ctx, j.Object)
		if err != nil {
			return resp, fmt.Errorf("waiting for %s: %w", j.Object, err)
		}
		defer unlock()
		j.Mark(PhaseLock)
	}
	return h.fn(ctx, j, req)
}

func (e *Engine) finish(j *Job, err error) {
	j.mu.Lock()
	j.Duration = time.Since(j.Start)
	outcome := errdefs.Class(err)
	if err != nil {
		j.Status, j.Error, j.Class = StatusFailed, err.Error(), outcome
	} else {
		j.Status = StatusSucceeded
	}
	j.mu.Unlock()
	e.jobsRunning.WithLabelValues(j.Name).Dec()
	e.jobsTotal.WithLabelValues(j.Name, outcome).Inc()
	e.jobDuration.WithLabelValues(j.Name, outcome).Observe(j.Duration.Seconds())
	if j.tl != nil {
		e.observePhases(j, err)
	}

	e.mu.Lock()
	delete(e.running, j.ID)
	e.done = append(e.done, j)
	if len(e.done) > e.history {
		e.done = e.done[len(e.done)-e.history:]
	}
	e.mu.Unlock()
	e.wg.Done()

	l := j.logger.WithField(log.FieldDuration, j.Duration.Round(time.Microsecond).String())
	switch {
	case err != nil && !errdefs.Is(err, errdefs.ErrNotFound):
		l.WithError(err).Warn("job failed")
	case err != nil:
		l.WithError(err).Debug("job failed")
	case j.quiet:
		l.Debug("job done")
	default:
		l.Info("job done")
	}
}

// observePhases puts a timed job's phases in the histogram (when it
// succeeded: a failed job's phases stop anywhere) and logs them.
func (e *Engine) observePhases(j *Job, err error) {
	debug := j.logger.Logger.IsLevelEnabled(logrus.DebugLevel)
	line := ""
	j.mu.Lock()
	tl := j.tl
	if err == nil {
		for i := 0; i < tl.Len(); i++ {
			name, d := tl.Phase(i)
			e.jobPhase.WithLabelValues(j.Name, name).Observe(d.Seconds())
		}
	}
	if debug {
		line = tl.String()
	}
	j.mu.Unlock()
	if debug {
		j.logger.WithField("phases", line).Debug("job phases")
	}
}

// Jobs returns the running jobs and the recent finished ones, newest first.
func (e *Engine) Jobs() []JobInfo {
	e.mu.Lock()
	jobs := make([]*Job, 0, len(e.running)+len(e.done))
	for _, j := range e.running {
		jobs = append(jobs, j)
	}
	jobs = append(jobs, e.done...)
	e.mu.Unlock()
	out := make([]JobInfo, len(jobs))
	for i, j := range jobs {
		out[i] = j.snapshot()
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out
}

// Shutdown stops accepting jobs and waits for running ones; when ctx ends
// first, it cancels them and waits for them to return.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	e.mu.Lock()
	n := len(e.running)
	for _, j := range e.running {
		j.cancel()
	}
	e.mu.Unlock()
	log.G(ctx).Warnf("cancelled %d jobs still running at the end of the grace period", n)
	<-done
	return fmt.Errorf("%d jobs cancelled: %w", n, ctx.Err())
}

// keyLocks serializes work per object key; waiting honours the context.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{}
	refs int
}

func (k *keyLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// one is the args of a job that has one: one(log.FieldPodID, id).
func one(k, v string) map[string]string { return map[string]string{k: v} }
