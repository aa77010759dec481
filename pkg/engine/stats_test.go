package engine

import (
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCPURate(t *testing.T) {
	start := time.Unix(1000, 0)
	var r cpuRate
	// First sample: the average since the start.
	if got := r.update(2e9, start.Add(4*time.Second), start); got != 5e8 {
		t.Errorf("first sample: %d", got)
	}
	// A window of at least a second: the rate over it.
	if got := r.update(3e9, start.Add(6*time.Second), start); got != 5e8 {
		t.Errorf("2 s window: %d", got)
	}
	// A second client 100 ms later gets the same rate; the window stays.
	if got := r.update(3.1e9, start.Add(6100*time.Millisecond), start); got != 5e8 {
		t.Errorf("short window: %d", got)
	}
	if got := r.update(4e9, start.Add(7*time.Second), start); got != 1e9 {
		t.Errorf("window from the last kept sample: %d", got)
	}
	// A counter that went back starts over.
	if got := r.update(1e9, start.Add(8*time.Second), start); got != 125e6 {
		t.Errorf("after a reset: %d", got)
	}
	var z cpuRate
	if got := z.update(1e9, start, time.Time{}); got != 0 {
		t.Errorf("no start time: %d", got)
	}
}

func TestParseNetDev(t *testing.T) {
	data := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1049000     700    1    2    0     0          0         0    50000     600    3    4    0     0       0          0
`
	got, err := parseNetDev([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := ifaceStats{Name: "eth0", RxBytes: 1049000, RxPackets: 700, RxErrors: 1, RxDropped: 2,
		TxBytes: 50000, TxPackets: 600, TxErrors: 3, TxDropped: 4}
	if len(got) != 1 || got[0] != want {
		t.Errorf("got %+v", got)
	}
	for _, bad := range []string{"h\nh\neth0 1 2 3\n", "h\nh\neth0: 1 2 3\n", "h\nh\neth0: x 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"} {
		if _, err := parseNetDev([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestPodTotal(t *testing.T) {
	res := &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 150000, CpuPeriod: 100000, MemoryLimitInBytes: 100}
	over := &runtimeapi.LinuxContainerResources{CpuShares: 10, CpuQuota: 10000, MemoryLimitInBytes: 5}
	got := podTotal(res, over)
	if got.CpuShares != 522 || got.CpuQuota != 160000 || got.CpuPeriod != 100000 || got.MemoryLimitInBytes != 105 {
		t.Errorf("total %v", got)
	}
	if res.CpuShares != 512 {
		t.Error("podTotal changed its input")
	}
	// Unlimited stays unlimited; no overhead, no change.
	if got := podTotal(&runtimeapi.LinuxContainerResources{CpuQuota: -1}, over); got.CpuQuota != -1 || got.MemoryLimitInBytes != 0 {
		t.Errorf("unlimited: %v", got)
	}
	if got := podTotal(res, nil); got.CpuShares != 512 {
		t.Errorf("no overhead: %v", got)
	}
	if podTotal(nil, over) != nil {
		t.Error("no resources")
	}
}

func TestMetricTable(t *testing.T) {
	for _, v := range []int{1, 2} {
		tb := newMetricTable(v)
		seen := map[string]bool{}
		for _, d := range tb.defs {
			if seen[d.name] || d.help == "" || tb.byName[d.name] != d {
				t.Errorf("v%d: %s duplicated, without help or not indexed", v, d.name)
			}
			seen[d.name] = true
		}
		if got := seen["container_pressure_cpu_stalled_seconds_total"]; got != (v == 2) {
			t.Errorf("v%d: pressure metrics %v", v, got)
		}
	}
	tb := newMetricTable(1)
	e := &emitter{t: &tb, base: []string{"c", "/id", "img", "id", "ns", "pod"}, at: time.Unix(5, 0)}
	e.add("container_network_receive_bytes_total", 2.9e9, "eth0")
	e.add("container_cpu_usage_seconds_total", 2.9, "total")
	p := &PodMetrics{PodID: "p", Samples: e.out}
	m := p.CRI().Metrics
	if len(m) != 2 || m[0].Value.Value != 2900000000 || m[1].Value.Value != 2 || len(m[0].LabelValues) != 7 ||
		m[0].LabelValues[6] != "eth0" || m[1].MetricType != runtimeapi.MetricType_COUNTER || m[1].Timestamp != 5e9 {
		t.Errorf("CRI metrics %v", m)
	}
}
