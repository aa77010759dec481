package daemon

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/timeline"
)

// TestStartTimeline runs a pod with a container, and a pod with a shared
// pid namespace (the infra path) with one, through the daemon, and checks
// the phases of their run_pod, create and start jobs: in verbose status,
// every expected phase in order, none negative, summing to no more than
// the job's duration in the job list; and a histogram sample of each in
// /metrics. No wall-clock time is asserted.
func TestStartTimeline(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimtq", "10.213.91.0/24")+"[image]\nsandbox_image = \"PAUSE\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	pause := reg.push(t, "test/pause:1", busyboxImage(t, []string{"sleep", "1000000"}, nil))
	b, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(b), "PAUSE", pause, 1)), 0o600)
	d := e.start()
	d.pull(t, img)
	d.pull(t, pause)
	admin := e.admin()

	pod := []string{engine.PhaseLock, "validate", "namespaces", "shm_sysctls", "pod_files", "net_ipam", "net_veth", "net_ports", "network"}
	// The pod's monitor starts in the background at the beginning of
	// run_pod: the infra waits for it (monitor_reuse), every pod at the end
	// (monitor), and a create finds it.
	infra := []string{"cgroup", "monitor_reuse", "infra"}                                   // the monitor's own infra process
	imageInfra := []string{"image", "snapshot", "spec", "monitor_reuse", "create", "start"} // the sandbox image
	// A Localhost seccomp profile for the sandbox: the monitor's own infra
	// process cannot apply one, so the sandbox image runs.
	profile := filepath.Join(t.TempDir(), "allow.json")
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The monitor starts the containers' inits itself (direct create: no
	// helper), from what libct prepared in the daemon.
	start := []string{engine.PhaseLock, "validate", "libct_start", "monitor_call", "record", "refresh"}
	create := func(monitor string) []string {
		return []string{engine.PhaseLock, "validate", "snapshot", "spec", monitor, "libct_prepare", "libct_create", "monitor_call",
			"libct_commit", "record"}
	}
	for _, tc := range []struct {
		name    string
		pid     runtimeapi.NamespaceMode
		seccomp string
		runPod  []string
		create  []string
	}{
		{"own-pid", runtimeapi.NamespaceMode_CONTAINER, "", append(slices.Clone(pod), "monitor", "record"), create("monitor_reuse")},
		{"shared-pid", runtimeapi.NamespaceMode_POD, "", append(append(slices.Clone(pod), infra...), "monitor", "record"), create("monitor_reuse")},
		{"shared-pid-image", runtimeapi.NamespaceMode_POD, profile, append(append(slices.Clone(pod), imageInfra...), "monitor", "record"), create("monitor_reuse")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := podConfig("tl-"+tc.name, e.logs)
			pc.Linux.SecurityContext.NamespaceOptions.Pid = tc.pid
			if tc.seccomp != "" {
				pc.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{
					ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: tc.seccomp}
			}
			p := d.runPod(t, pc)
			c := d.create(t, p, pc, ctrConfig("sleeper", img, "sleep", "1000"))
			d.startCtr(t, c)

			ps, err := d.rs.PodSandboxStatus(bg, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p, Verbose: true})
			if err != nil {
				t.Fatal(err)
			}
			cs, err := d.rs.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{ContainerId: c, Verbose: true})
			if err != nil {
				t.Fatal(err)
			}
			podTL := verboseTimeline(t, ps.Info)
			ctrTL := verboseTimeline(t, cs.Info)
			jobs := jobList(t, admin, "")
			checkPhases(t, podTL["run_pod"], tc.runPod, jobs, "run_pod", "podname:tl-"+tc.name+"_")
			checkPhases(t, ctrTL["create"], tc.create, jobs, "create", "pod:"+p)
			checkPhases(t, ctrTL["start"], start, jobs, "start", "ctr:"+c)
		})
	}

	// One histogram sample per phase per successful job: three pods,
	// three containers.
	counts := phaseCounts(t, admin)
	for _, tc := range []struct {
		job    string
		phases []string
		want   float64
	}{
		{"run_pod", pod, 3}, {"run_pod", []string{"cgroup", "infra"}, 1}, {"run_pod", []string{"image", "snapshot", "create", "start"}, 1},
		{"run_pod", []string{"monitor_reuse"}, 2}, {"run_pod", []string{"monitor_spawn"}, 0}, {"run_pod", []string{"monitor", "record"}, 3},
		{"create", []string{engine.PhaseLock, "validate", "snapshot", "spec", "libct_prepare", "libct_create", "monitor_call", "libct_commit", "record"}, 3},
		{"create", []string{"helper"}, 0}, {"start", []string{"helper"}, 0},
		{"create", []string{"monitor_spawn"}, 0}, {"create", []string{"monitor_reuse"}, 3},
		{"start", start, 3},
	} {
		for _, ph := range tc.phases {
			if got := counts[tc.job+"/"+ph]; got != tc.want {
				t.Errorf("shim_job_phase_seconds_count{job=%q,phase=%q} = %v, want %v", tc.job, ph, got, tc.want)
			}
		}
	}
	// The debug line of each timed job.
	log, err := os.ReadFile(filepath.Join(e.base, "shim.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, job := range []string{"run_pod", "create", "start"} {
		n := 0
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, `msg="job phases"`) && strings.Contains(l, "job="+job+" ") &&
				strings.Contains(l, "phases=\""+engine.PhaseLock+"=") {
				n++
			}
		}
		if n != 3 {
			t.Errorf("%d debug lines with the phases of %s jobs, want 3", n, job)
		}
	}
	d.removeAllPods(t)
	d.stop(t)
}

func verboseTimeline(t *testing.T, info map[string]string) map[string]timeline.Report {
	t.Helper()
	var out map[string]timeline.Report
	if err := json.Unmarshal([]byte(info["timeline"]), &out); err != nil {
		t.Fatalf("verbose info timeline %q: %v", info["timeline"], err)
	}
	return out
}

// jobList is the daemon's /jobs (query: "" or "?name=...").
func jobList(t *testing.T, admin *http.Client, query string) []engine.JobInfo {
	t.Helper()
	resp, err := admin.Get("http://shim/jobs" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jobs []engine.JobInfo
	if err := json.NewDecoder(resp.Body).Decode(&jobs); err != nil {
		t.Fatal(err)
	}
	return jobs
}

// checkPhases compares a verbose timeline with the wanted phases and with
// the job that made it (the newest job of that name whose object starts
// with object).
func checkPhases(t *testing.T, r timeline.Report, want []string, jobs []engine.JobInfo, name, object string) {
	t.Helper()
	var job *engine.JobInfo
	for i := range jobs {
		if jobs[i].Name == name && strings.HasPrefix(jobs[i].Object, object) {
			job = &jobs[i]
			break
		}
	}
	if job == nil || job.Status != engine.StatusSucceeded {
		t.Fatalf("no succeeded %s job of %s: %+v", name, object, job)
	}
	var got []string
	sum := 0.0
	for _, p := range r.Phases {
		got = append(got, p.Name)
		if p.MS < 0 {
			t.Errorf("%s: phase %s is %vms", name, p.Name, p.MS)
		}
		sum += p.MS
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s phases %v, want %v", name, got, want)
	}
	t.Logf("%s: %+v (job %v)", name, r.Phases, job.Duration)
	if r.Job != name || !slices.Equal(r.Phases, job.Phases) {
		t.Errorf("%s: verbose timeline %+v, job record %+v", name, r, job.Phases)
	}
	total := float64(job.Duration.Microseconds()) / 1000
	// Phases are rounded down to the microsecond: the sum is at most
	// the total, give or take a microsecond per phase.
	if sum > total+float64(len(got))/1000 || r.TotalMS > total {
		t.Errorf("%s: phases sum to %vms (end %vms), the job took %vms", name, sum, r.TotalMS, total)
	}
}

// phaseCounts reads shim_job_phase_seconds_count by "job/phase".
func phaseCounts(t *testing.T, admin *http.Client) map[string]float64 {
	t.Helper()
	resp, err := admin.Get("http://shim/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "shim_job_phase_seconds_count{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		var job, phase string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "job":
				job = v
			case "phase":
				phase = v
			}
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q", sc.Text())
		}
		out[job+"/"+phase] = f
	}
	return out
}
