package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI is an in-memory CRI endpoint that records the calls it gets, in
// one log shared by every fake of a test, so that the order of calls across
// two endpoints can be checked. It stands in for a runtime, which a unit
// test cannot start; bench.sh runs the harness against real ones.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	name        string
	noRuntime   bool // RuntimeService answers Unimplemented
	failCreates int  // the first failCreates CreateContainer calls fail

	mu     sync.Mutex
	log    *[]string
	images map[string]bool
	pods   map[string]bool
	ctrs   map[string]string // id -> state
	nextID int
	pidNS  []string // the PID namespace mode of each RunPodSandbox and CreateContainer
}

func (f *fakeCRI) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.log = append(*f.log, f.name+":"+call)
}

func (f *fakeCRI) id(prefix string) string {
	f.nextID++
	return fmt.Sprintf("%s%d", prefix, f.nextID)
}

func (f *fakeCRI) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: f.name, RuntimeVersion: "0"}, nil
}

func (f *fakeCRI) ImageStatus(_ context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.images[r.GetImage().GetImage()] {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:x"}}, nil
}

func (f *fakeCRI) PullImage(_ context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	f.record("pull")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[r.GetImage().GetImage()] = true
	return &runtimeapi.PullImageResponse{ImageRef: "sha256:x"}, nil
}

func (f *fakeCRI) RemoveImage(_ context.Context, r *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	f.record("remove")
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, r.GetImage().GetImage())
	return &runtimeapi.RemoveImageResponse{}, nil
}

func (f *fakeCRI) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	if f.noRuntime {
		return nil, status.Error(codes.Unimplemented, "method ListPodSandbox not implemented")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var items []*runtimeapi.PodSandbox
	for id := range f.pods {
		items = append(items, &runtimeapi.PodSandbox{Id: id})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

func (f *fakeCRI) RunPodSandbox(_ context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	f.record("runpod")
	f.mu.Lock()
	f.pidNS = append(f.pidNS, "pod:"+r.GetConfig().GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid().String())
	f.mu.Unlock()
	if _, err := os.Stat(r.GetConfig().GetLogDirectory()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "log directory: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.id("pod")
	f.pods[id] = true
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (f *fakeCRI) CreateContainer(_ context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	f.record("create")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pidNS = append(f.pidNS, "ctr:"+r.GetConfig().GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid().String())
	if f.failCreates > 0 {
		f.failCreates--
		return nil, status.Error(codes.Internal, "injected failure")
	}
	if !f.pods[r.GetPodSandboxId()] {
		return nil, status.Error(codes.NotFound, "no such pod")
	}
	if !f.images[r.GetConfig().GetImage().GetImage()] {
		return nil, status.Error(codes.NotFound, "image not pulled")
	}
	id := f.id("ctr")
	f.ctrs[id] = "created"
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (f *fakeCRI) StartContainer(_ context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	f.record("start")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctrs[r.GetContainerId()] = "running"
	return &runtimeapi.StartContainerResponse{}, nil
}

func (f *fakeCRI) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := runtimeapi.ContainerState_CONTAINER_CREATED
	if f.ctrs[r.GetContainerId()] == "running" {
		st = runtimeapi.ContainerState_CONTAINER_RUNNING
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: r.GetContainerId(), State: st}}, nil
}

func (f *fakeCRI) StopContainer(context.Context, *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	return &runtimeapi.StopContainerResponse{}, nil
}

func (f *fakeCRI) RemoveContainer(_ context.Context, r *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ctrs, r.GetContainerId())
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (f *fakeCRI) StopPodSandbox(context.Context, *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (f *fakeCRI) RemovePodSandbox(_ context.Context, r *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	f.record("rmpod")
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, r.GetPodSandboxId())
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// serveFake serves f on a unix socket and returns its endpoint.
func serveFake(t *testing.T, f *fakeCRI) string {
	t.Helper()
	f.images, f.pods, f.ctrs = map[string]bool{}, map[string]bool{}, map[string]string{}
	dir, err := os.MkdirTemp("", "bench-fake-") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, f)
	runtimeapi.RegisterImageServiceServer(s, f)
	go s.Serve(l)
	t.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	return "unix://" + sock
}

// runBench runs the command with args and decodes its JSON lines.
func runBench(t *testing.T, args ...string) (int, []record, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	rc := run(args, &out, &errOut)
	var recs []record
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line == "" {
			continue
		}
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", line, err)
		}
		recs = append(recs, r)
	}
	return rc, recs, errOut.String()
}

func ofType(recs []record, typ string) []record {
	var out []record
	for _, r := range recs {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func TestPullCompareAlternates(t *testing.T) {
	var log []string
	a := &fakeCRI{name: "rtA", log: &log}
	b := &fakeCRI{name: "rtB", log: &log}
	ea, eb := serveFake(t, a), serveFake(t, b)

	rc, recs, stderr := runBench(t, "-mode", "pull", "-n", "3", "-warmup", "1", "-image", "x/y:1",
		"-endpoint", ea, "-compare", eb)
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr)
	}
	// Set-up pulls once each, then warm-up and 3 rounds, each remove+pull,
	// alternating A, B.
	want := []string{"rtA:pull", "rtB:pull"}
	for range 4 {
		want = append(want, "rtA:remove", "rtA:pull", "rtB:remove", "rtB:pull")
	}
	if strings.Join(log, " ") != strings.Join(want, " ") {
		t.Errorf("calls:\n got %v\nwant %v", log, want)
	}

	samples := ofType(recs, "sample")
	if len(samples) != 6 {
		t.Fatalf("%d samples, want 6", len(samples))
	}
	got := map[string][]float64{}
	for i, s := range samples {
		wantTarget := []string{"rtA", "rtB"}[i%2]
		if s.Target != wantTarget || *s.Round != i/2 {
			t.Errorf("sample %d: target %s round %d, want %s round %d", i, s.Target, *s.Round, wantTarget, i/2)
		}
		if s.Metrics["pull_ms"] <= 0 {
			t.Errorf("sample %d: pull_ms %v", i, s.Metrics["pull_ms"])
		}
		got[s.Target] = append(got[s.Target], s.Metrics["pull_ms"])
	}
	sums := ofType(recs, "summary")
	if len(sums) != 2 {
		t.Fatalf("%d summaries, want 2", len(sums))
	}
	for _, s := range sums {
		if want := Summarize(got[s.Target]); *s.Summary != want || s.Metric != "pull_ms" || !s.Primary || s.Unit != "ms" {
			t.Errorf("summary %+v %+v, want %+v of pull_ms", s, *s.Summary, want)
		}
	}
	ratios := ofType(recs, "ratio")
	if len(ratios) != 1 {
		t.Fatalf("%d ratios, want 1", len(ratios))
	}
	r := ratios[0]
	ma, mb := Summarize(got["rtA"]).Median, Summarize(got["rtB"]).Median
	if r.A != "rtA" || r.B != "rtB" || !near(*r.MedianRatio, ma/mb) || !near(*r.MedianA, ma) || !near(*r.MedianB, mb) {
		t.Errorf("ratio %+v: want rtA/rtB = %v/%v", r, ma, mb)
	}
	if run := ofType(recs, "run"); len(run) != 1 || len(run[0].Targets) != 2 || run[0].Params["image"] != "x/y:1" {
		t.Errorf("run record %+v", run)
	}
}

func TestStartCleansUp(t *testing.T) {
	var log []string
	f := &fakeCRI{name: "rt", log: &log}
	ep := serveFake(t, f)
	logRoot := t.TempDir()
	rc, recs, stderr := runBench(t, "-mode", "start", "-n", "2", "-warmup", "0", "-endpoint", ep, "-log-root", logRoot)
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr)
	}
	if n := len(ofType(recs, "sample")); n != 2 {
		t.Fatalf("%d samples, want 2", n)
	}
	for _, s := range ofType(recs, "sample") {
		m := s.Metrics
		if !near(m["start_ms"], m["run_pod_ms"]+m["create_ms"]+m["start_ctr_ms"]) {
			t.Errorf("start_ms %v is not the sum of its steps %v", m["start_ms"], m)
		}
	}
	// Set-up pulls the pause and the container image first.
	want := "rt:pull rt:pull rt:runpod rt:create rt:start rt:rmpod rt:runpod rt:create rt:start rt:rmpod"
	if got := strings.Join(log, " "); got != want {
		t.Errorf("calls %q, want %q", got, want)
	}
	if len(f.pods) != 0 || len(f.ctrs) != 0 {
		t.Errorf("left behind: pods %v containers %v", f.pods, f.ctrs)
	}
	if ents, _ := os.ReadDir(logRoot); len(ents) != 0 {
		t.Errorf("log directories left behind: %v", ents)
	}
}

func TestStartSharedPID(t *testing.T) {
	for mode, want := range map[string]string{"start": "CONTAINER", "start-shared-pid": "POD"} {
		var log []string
		f := &fakeCRI{name: "rt", log: &log}
		ep := serveFake(t, f)
		rc, recs, stderr := runBench(t, "-mode", mode, "-n", "2", "-warmup", "0", "-endpoint", ep)
		if rc != 0 {
			t.Fatalf("%s: exit %d: %s", mode, rc, stderr)
		}
		if len(f.pidNS) != 4 {
			t.Fatalf("%s: PID modes %v, want 2 pods and 2 containers", mode, f.pidNS)
		}
		for _, got := range f.pidNS {
			if !strings.HasSuffix(got, ":"+want) {
				t.Errorf("%s: PID namespace modes %v, want %s", mode, f.pidNS, want)
				break
			}
		}
		if run := ofType(recs, "run"); len(run) != 1 || run[0].Params["shared_pid"] != (want == "POD") {
			t.Errorf("%s: run record %+v", mode, run)
		}
	}
}

func TestConcurrentFailureCleansUp(t *testing.T) {
	for _, fail := range []int{0, 2, 5} {
		var log []string
		f := &fakeCRI{name: "rt", log: &log, failCreates: fail}
		ep := serveFake(t, f)
		rc, recs, stderr := runBench(t, "-mode", "concurrent", "-pods", "5", "-n", "1", "-warmup", "0", "-endpoint", ep)
		wantRC := 0
		if fail > 0 {
			wantRC = 1
		}
		if rc != wantRC || (fail > 0) != strings.Contains(stderr, "injected failure") {
			t.Errorf("%d failing: exit %d, stderr %q", fail, rc, stderr)
		}
		if rc == 0 {
			s := ofType(recs, "sample")
			if len(s) != 1 || s[0].Metrics["wall_ms"] < s[0].Metrics["pod_max_ms"] {
				t.Errorf("samples %+v: want one with wall_ms >= pod_max_ms", s)
			}
		}
		runs := strings.Count(strings.Join(log, " "), "rt:runpod")
		if runs != 5 {
			t.Errorf("%d failing: %d pods started, want 5", fail, runs)
		}
		if len(f.pods) != 0 || len(f.ctrs) != 0 {
			t.Errorf("%d failing: left behind: pods %v containers %v", fail, f.pods, f.ctrs)
		}
	}
}

func TestUnimplementedExits3(t *testing.T) {
	var log []string
	a := &fakeCRI{name: "rtA", log: &log, noRuntime: true}
	b := &fakeCRI{name: "rtB", log: &log}
	ea, eb := serveFake(t, a), serveFake(t, b)
	for _, mode := range []string{"start", "concurrent"} {
		rc, recs, stderr := runBench(t, "-mode", mode, "-n", "1", "-endpoint", ea, "-compare", eb)
		if rc != 3 || !strings.Contains(stderr, "rtA: ListPodSandbox") {
			t.Errorf("%s: exit %d, stderr %q: want 3 naming rtA", mode, rc, stderr)
		}
		if n := len(ofType(recs, "sample")); n != 0 {
			t.Errorf("%s: %d samples from an unsupported run", mode, n)
		}
	}
	for _, call := range log {
		if strings.HasSuffix(call, ":runpod") {
			t.Errorf("a pod was started: %v", log)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-mode", "pull"}, // no endpoint
		{"-mode", "nope", "-endpoint", "unix:///x"},            // unknown mode
		{"-mode", "pull", "-endpoint", "unix:///x", "-n", "0"}, // no rounds
		{"-mode", "pull", "-endpoint", "unix:///x", "extra"},   // stray argument
		{"-endpoint", "unix:///x", "-compare", "unix:///b", "-endpoint-b", "unix:///c"},
	} {
		if rc, _, _ := runBench(t, args...); rc != 2 {
			t.Errorf("%q: exit %d, want 2", args, rc)
		}
	}
}

func TestGRPCTarget(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///run/shim/shim.sock": "unix:///run/shim/shim.sock",
		"/run/shim/shim.sock":        "unix:///run/shim/shim.sock",
		"tcp://127.0.0.1:1234":       "dns:///127.0.0.1:1234",
	} {
		if got, err := grpcTarget(in); err != nil || got != want {
			t.Errorf("grpcTarget(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"unix://relative.sock", "shim.sock", "http://x"} {
		if got, err := grpcTarget(bad); err == nil {
			t.Errorf("grpcTarget(%q) = %q, want an error", bad, got)
		}
	}
}
