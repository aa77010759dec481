package main

import (
	"bytes"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
)

// parsePeers parses args with the peer flags alone.
func parsePeers(args ...string) ([]*target, error) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var l peerList
	addPeerFlags(fs, &l)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return l.targets()
}

func TestPeerFlags(t *testing.T) {
	type want struct {
		Label, Name, Endpoint, Match string
		Names                        []string
		PID                          int
	}
	for _, tc := range []struct {
		args []string
		want []want
	}{
		{nil, nil},
		{[]string{"-compare", "unix:///b"}, []want{{Label: "B", Endpoint: "unix:///b"}}},
		{[]string{"-endpoint-b", "unix:///b", "-name-b", "cd"}, []want{{Label: "B", Name: "cd", Endpoint: "unix:///b"}}},
		// The old single-peer form: the -b flags before -compare.
		{[]string{"-name-b", "cd", "-daemon-pid-b", "7", "-compare", "unix:///b", "-endpoint-b", "unix:///b"},
			[]want{{Label: "B", Name: "cd", Endpoint: "unix:///b", PID: 7}}},
		{[]string{
			"-compare", "unix:///b", "-name-b", "containerd 1.6", "-runtime-procs-b", "containerd-shim-runc-v2, pause",
			"-proc-match-b", "/p16/c.sock", "-daemon-pid-b", "16",
			"-compare", "unix:///c", "-name-b", "containerd 2.4", "-runtime-procs-b", "containerd-shim-runc-v2,pause",
			"-proc-match-b", "/p24/c.sock", "-daemon-pid-b", "24",
		}, []want{
			{"B", "containerd 1.6", "unix:///b", "/p16/c.sock", []string{"containerd-shim-runc-v2", "pause"}, 16},
			{"C", "containerd 2.4", "unix:///c", "/p24/c.sock", []string{"containerd-shim-runc-v2", "pause"}, 24},
		}},
		// A first peer with flags before its -compare, a second after.
		{[]string{"-name-b", "x", "-compare", "unix:///b", "-compare", "unix:///c", "-name-b", "y"},
			[]want{{Label: "B", Name: "x", Endpoint: "unix:///b"}, {Label: "C", Name: "y", Endpoint: "unix:///c"}}},
	} {
		got, err := parsePeers(tc.args...)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		var g []want
		for _, p := range got {
			g = append(g, want{p.Label, p.Name, p.Endpoint, p.Procs.Match, p.Procs.Names, p.DaemonPID})
			if p.DaemonPID > 0 && !p.Procs.Exclude[p.DaemonPID] {
				t.Errorf("%q: daemon %d not excluded from the processes", tc.args, p.DaemonPID)
			}
		}
		if !reflect.DeepEqual(g, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.args, g, tc.want)
		}
	}
	for _, args := range [][]string{
		{"-compare", "unix:///b", "-endpoint-b", "unix:///c"},     // disagree
		{"-compare", "unix:///b", "-name-b", "x", "-name-b", "y"}, // twice for one peer
		{"-name-b", "x", "-compare", "unix:///b", "-name-b", "y"}, // ditto: y is not the next peer's
		{"-name-b", "x"}, // no endpoint
		{"-compare", "unix:///b", "-daemon-pid-b", "x"}, // not a number
	} {
		if got, err := parsePeers(args...); err == nil {
			t.Errorf("%q: no error, got %d peers", args, len(got))
		}
	}
}

func TestUniqueNames(t *testing.T) {
	ts := []*target{{Label: "A", Name: "shim"}, {Label: "B", Name: "containerd"}, {Label: "C", Name: "containerd"}}
	uniqueNames(ts)
	var got []string
	for _, x := range ts {
		got = append(got, x.Name)
	}
	if want := []string{"shim", "containerd-B", "containerd-C"}; !reflect.DeepEqual(got, want) {
		t.Errorf("names %v, want %v", got, want)
	}
}

func TestBetterOf(t *testing.T) {
	for _, tc := range []struct {
		vals   []float64
		higher bool
		want   int
	}{
		{[]float64{300, 250}, false, 1},
		{[]float64{250, 300}, false, 0},
		{[]float64{130, 200}, true, 1},
		{[]float64{200, 130}, true, 0},
		{[]float64{5, 5, 4, 4}, false, 2}, // the first on a tie
		{[]float64{5}, true, 0},
	} {
		if got := betterOf(tc.vals, tc.higher); got != tc.want {
			t.Errorf("betterOf(%v, higher %v) = %d, want %d", tc.vals, tc.higher, got, tc.want)
		}
	}
}

func TestComputeBetter(t *testing.T) {
	a := Summary{N: 3, Median: 50, P90: 80}
	peers := []Summary{{N: 3, Median: 300, P90: 350}, {N: 3, Median: 250, P90: 400}}
	// Times: each statistic against the peer best at it.
	r := computeBetter(a, peers, false)
	if r.MedianPeer != 1 || r.P90Peer != 0 || !r.MedianOK || !r.P90OK || !near(r.MedianRatio, 0.2) || !near(r.P90Ratio, 80.0/350) {
		t.Errorf("times: %+v", r)
	}
	// Throughput: the higher is the better peer.
	a = Summary{N: 3, Median: 400, P90: 420}
	peers = []Summary{{N: 3, Median: 130, P90: 140}, {N: 3, Median: 200, P90: 130}}
	r = computeBetter(a, peers, true)
	if r.MedianPeer != 1 || r.P90Peer != 0 || !near(r.MedianRatio, 2) || !near(r.P90Ratio, 3) {
		t.Errorf("throughput: %+v", r)
	}
	if r := computeBetter(a, nil, false); r.MedianOK || r.P90OK {
		t.Errorf("no peers: %+v", r)
	}
	if r := computeBetter(a, []Summary{{N: 1}}, false); r.MedianOK || r.P90OK {
		t.Errorf("a peer at 0: %+v", r)
	}
	if !higherIsBetter("throughput_mibs") || higherIsBetter("start_ms") || higherIsBetter("pss_per_pod_kib") {
		t.Error("higherIsBetter: only throughput")
	}
}

func TestGoals(t *testing.T) {
	for name, g := range goals {
		m, ok := modes[name]
		if !ok {
			t.Errorf("goal of %q: no such mode", name)
			continue
		}
		if g.AtLeast != higherIsBetter(m.Primary) {
			t.Errorf("goal of %s (%s): AtLeast %v, but higherIsBetter(%s) is %v", name, g, g.AtLeast, m.Primary, !g.AtLeast)
		}
	}
	for _, tc := range []struct {
		g    goal
		r    float64
		want string
	}{
		{goal{Value: 0.1}, 0.2, "not met"},
		{goal{Value: 0.1}, 0.1, "met"},
		{goal{Value: 0.5}, 0.05, "met"},
		{goal{AtLeast: true, Value: 1}, 3.05, "met"},
		{goal{AtLeast: true, Value: 1}, 0.9, "not met"},
	} {
		if got := tc.g.verdict(tc.r); got != tc.want {
			t.Errorf("%s with %v: %q, want %q", tc.g, tc.r, got, tc.want)
		}
	}
}

func TestThreeTargetsAlternate(t *testing.T) {
	var log []string
	ea := serveFake(t, &fakeCRI{name: "shim", log: &log})
	eb := serveFake(t, &fakeCRI{name: "containerd", log: &log})
	ec := serveFake(t, &fakeCRI{name: "containerd", log: &log})
	rc, recs, stderr := runBench(t, "-mode", "pull", "-n", "4", "-warmup", "1", "-image", "x/y:1",
		"-endpoint", ea, "-compare", eb, "-name-b", "containerd 1.6", "-compare", ec, "-name-b", "containerd 2.4")
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr)
	}
	want := []string{"shim:pull", "containerd:pull", "containerd:pull"}
	for range 5 {
		want = append(want, "shim:remove", "shim:pull", "containerd:remove", "containerd:pull", "containerd:remove", "containerd:pull")
	}
	if strings.Join(log, " ") != strings.Join(want, " ") {
		t.Errorf("calls:\n got %v\nwant %v", log, want)
	}
	names := []string{"shim", "containerd 1.6", "containerd 2.4"}
	got := map[string][]float64{}
	for i, s := range ofType(recs, "sample") {
		if s.Target != names[i%3] || *s.Round != i/3 {
			t.Errorf("sample %d: %s round %d, want %s round %d", i, s.Target, *s.Round, names[i%3], i/3)
		}
		got[s.Target] = append(got[s.Target], s.Metrics["pull_ms"])
	}
	if len(got) != 3 || len(got["shim"]) != 4 {
		t.Fatalf("samples %v", got)
	}
	sa := Summarize(got["shim"])
	peers := []Summary{Summarize(got["containerd 1.6"]), Summarize(got["containerd 2.4"])}
	ratios := ofType(recs, "ratio")
	if len(ratios) != 3 {
		t.Fatalf("%d ratio records, want 3 (one per peer, one against the better): %+v", len(ratios), ratios)
	}
	for i, r := range ratios[:2] {
		if r.Better || r.A != "shim" || r.B != names[i+1] || !near(*r.MedianRatio, sa.Median/peers[i].Median) ||
			!near(*r.P90Ratio, sa.P90/peers[i].P90) || !near(*r.P90B, peers[i].P90) {
			t.Errorf("ratio %d: %+v", i, r)
		}
	}
	br := ratios[2]
	want2 := computeBetter(sa, peers, false)
	if !br.Better || br.B != names[1+want2.MedianPeer] || br.BP90 != names[1+want2.P90Peer] ||
		!near(*br.MedianRatio, want2.MedianRatio) || !near(*br.P90Ratio, want2.P90Ratio) {
		t.Errorf("better ratio %+v, want %+v", br, want2)
	}
	// The better one is never worse than either peer.
	for i := range peers {
		if *br.MedianRatio < sa.Median/peers[i].Median-1e-9 {
			t.Errorf("better median ratio %v below the ratio to %s", *br.MedianRatio, names[i+1])
		}
	}
	if !strings.Contains(stderr, "goal: shim/better peer of pull_ms") {
		t.Errorf("no goal line in:\n%s", stderr)
	}
	run := ofType(recs, "run")
	if len(run) != 1 || len(run[0].Targets) != 3 || run[0].Targets[2].Label != "C" || run[0].Targets[2].Name != "containerd 2.4" {
		t.Errorf("run record %+v", run)
	}
}

// TestReportSeveralPeers: fixed records, so the table's every cell is known.
func TestReportSeveralPeers(t *testing.T) {
	in := `{"type":"host","nproc":2}
{"type":"run","mode":"start","run_id":"r1","targets":[{"label":"A","name":"shim"},{"label":"B","name":"containerd 1.6"},{"label":"C","name":"containerd 2.4"}]}
{"type":"summary","mode":"start","run_id":"r1","target":"shim","metric":"start_ms","unit":"ms","primary":true,"n":3,"median":50,"p90":60}
{"type":"summary","mode":"start","run_id":"r1","target":"containerd 1.6","metric":"start_ms","unit":"ms","primary":true,"n":3,"median":300,"p90":300}
{"type":"summary","mode":"start","run_id":"r1","target":"containerd 2.4","metric":"start_ms","unit":"ms","primary":true,"n":3,"median":250,"p90":400}
{"type":"ratio","mode":"start","run_id":"r1","metric":"start_ms","unit":"ms","primary":true,"a":"shim","b":"containerd 1.6","median_ratio":0.1667,"p90_ratio":0.2}
{"type":"ratio","mode":"start","run_id":"r1","metric":"start_ms","unit":"ms","primary":true,"a":"shim","b":"containerd 2.4","median_ratio":0.2,"p90_ratio":0.15}
{"type":"ratio","mode":"start","run_id":"r1","metric":"start_ms","unit":"ms","primary":true,"a":"shim","b":"containerd 2.4","better":true,"b_p90":"containerd 1.6","median_ratio":0.2,"p90_ratio":0.2}
{"type":"ratio","mode":"start","run_id":"r1","metric":"run_pod_ms","unit":"ms","a":"shim","b":"containerd 1.6","median_ratio":9}
{"type":"run","mode":"stream-throughput","run_id":"r2","targets":[{"label":"A","name":"shim"},{"label":"B","name":"containerd 1.6"},{"label":"C","name":"containerd 2.4"}]}
{"type":"summary","mode":"stream-throughput","run_id":"r2","target":"shim","metric":"throughput_mibs","unit":"MiB/s","primary":true,"n":3,"median":400,"p90":420}
{"type":"summary","mode":"stream-throughput","run_id":"r2","target":"containerd 1.6","metric":"throughput_mibs","unit":"MiB/s","primary":true,"n":3,"median":130,"p90":140}
{"type":"summary","mode":"stream-throughput","run_id":"r2","target":"containerd 2.4","metric":"throughput_mibs","unit":"MiB/s","primary":true,"n":3,"median":200,"p90":210}
{"type":"ratio","mode":"stream-throughput","run_id":"r2","metric":"throughput_mibs","unit":"MiB/s","primary":true,"a":"shim","b":"containerd 1.6","median_ratio":3.077,"p90_ratio":3}
{"type":"ratio","mode":"stream-throughput","run_id":"r2","metric":"throughput_mibs","unit":"MiB/s","primary":true,"a":"shim","b":"containerd 2.4","median_ratio":2,"p90_ratio":2}
{"type":"ratio","mode":"stream-throughput","run_id":"r2","metric":"throughput_mibs","unit":"MiB/s","primary":true,"a":"shim","b":"containerd 2.4","better":true,"b_p90":"containerd 2.4","median_ratio":2,"p90_ratio":2}
{"type":"run","mode":"memory","run_id":"r3","targets":[{"label":"A","name":"shim"},{"label":"B","name":"containerd 1.6"}]}
{"type":"summary","mode":"memory","run_id":"r3","target":"shim","metric":"pss_per_pod_kib","unit":"KiB","primary":true,"n":3,"median":247,"p90":250}
{"type":"summary","mode":"memory","run_id":"r3","target":"containerd 1.6","metric":"pss_per_pod_kib","unit":"KiB","primary":true,"n":3,"median":3958,"p90":4000}
{"type":"ratio","mode":"memory","run_id":"r3","metric":"pss_per_pod_kib","unit":"KiB","primary":true,"a":"shim","b":"containerd 1.6","median_ratio":0.0624,"p90_ratio":0.0625}
`
	var md bytes.Buffer
	_, recs, err := readRecords(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := markdown(recs, &md); err != nil {
		t.Fatal(err)
	}
	out := md.String()
	for _, line := range []string{
		"| mode | metric | shim | containerd 1.6 | containerd 2.4 | shim/containerd 1.6 (p50 / p90) | shim/containerd 2.4 (p50 / p90) | shim/better (p50 / p90) | goal | met |",
		"| start | start_ms | 50.0 ms | 300.0 ms | 250.0 ms | **0.167** / 0.200 | **0.200** / 0.150 | **0.200** / 0.200 (containerd 2.4 / containerd 1.6) | ≤ 0.10 | not met |",
		"| stream-throughput | throughput_mibs | 400.0 MiB/s | 130.0 MiB/s | 200.0 MiB/s | **3.077** / 3.000 | **2.000** / 2.000 | **2.000** / 2.000 (containerd 2.4) | ≥ 1.00 | met |",
		// A run with one peer: the better one is that peer.
		"| memory | pss_per_pod_kib | 247 KiB | 3958 KiB |  | **0.062** / 0.062 |  | **0.062** / 0.062 | ≤ 0.25 | met |",
		"| start | containerd 2.4 | start_ms | 3 | 250.0 ms | 400.0 ms |",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("markdown lacks\n%s\nin\n%s", line, out)
		}
	}
	if strings.Contains(out, "run_pod_ms") {
		t.Errorf("a secondary metric in the table:\n%s", out)
	}
	if n := strings.Count(out, "| start | start_ms |"); n != 1 {
		t.Errorf("%d rows of start, want 1:\n%s", n, out)
	}
}
