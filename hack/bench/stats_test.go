package main

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{7}, Summary{N: 1, Median: 7, P90: 7, Min: 7, Max: 7, Mean: 7, Stddev: 0}},
		{"two", []float64{4, 2}, Summary{N: 2, Median: 3, P90: 3.8, Min: 2, Max: 4, Mean: 3, Stddev: math.Sqrt2}},
		// 1..10 shuffled: p90 sits at rank 8.1 (0-based) -> 9 + 0.1.
		{"ten", []float64{10, 3, 7, 1, 9, 2, 8, 4, 6, 5}, Summary{N: 10, Median: 5.5, P90: 9.1, Min: 1, Max: 10, Mean: 5.5, Stddev: math.Sqrt(82.5 / 9)}},
		{"odd", []float64{5, 1, 3}, Summary{N: 3, Median: 3, P90: 4.6, Min: 1, Max: 5, Mean: 3, Stddev: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]float64(nil), tc.in...)
			got := Summarize(tc.in)
			if got.N != tc.want.N || !near(got.Median, tc.want.Median) || !near(got.P90, tc.want.P90) ||
				got.Min != tc.want.Min || got.Max != tc.want.Max || !near(got.Mean, tc.want.Mean) || !near(got.Stddev, tc.want.Stddev) {
				t.Errorf("Summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			for i := range orig {
				if tc.in[i] != orig[i] {
					t.Fatalf("Summarize reordered its input: %v", tc.in)
				}
			}
		})
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestRatio(t *testing.T) {
	if r, ok := ratio(1, 4); !ok || r != 0.25 {
		t.Errorf("ratio(1, 4) = %v, %v", r, ok)
	}
	if _, ok := ratio(1, 0); ok {
		t.Error("ratio(1, 0) claims a value")
	}
}

func TestUnitOf(t *testing.T) {
	for metric, want := range map[string]string{
		"pull_ms":         "ms",
		"pss_per_pod_kib": "KiB",
		"pss_per_pod_kib:containerd-shim-runc-v2": "KiB",
		"pods":   "",
		"ms_kib": "KiB",
	} {
		if got := unitOf(metric); got != want {
			t.Errorf("unitOf(%q) = %q, want %q", metric, got, want)
		}
	}
}
