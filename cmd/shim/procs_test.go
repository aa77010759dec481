package main

import "testing"

func TestProcsFor(t *testing.T) {
	for _, tc := range []struct {
		env       bool
		cur, ncpu int
		want      int
	}{
		{false, 2, 2, minProcs}, // a small node: raised
		{false, 1, 1, minProcs}, // a single CPU too
		{true, 2, 2, 0},         // GOMAXPROCS set in the environment
		{true, 1, 2, 0},         // however few
		{false, 1, 2, 0},        // a CPU quota made Go choose fewer: left
		{false, 4, 4, 0},        // enough already
		{false, 8, 8, 0},        // a big node
		{false, 2, 16, 0},       // a quota on a big node
		{false, minProcs, 2, 0}, // more Ps than CPUs already (set by hand)
	} {
		if got := procsFor(tc.env, tc.cur, tc.ncpu); got != tc.want {
			t.Errorf("procsFor(env %v, GOMAXPROCS %d, %d CPUs) = %d, want %d", tc.env, tc.cur, tc.ncpu, got, tc.want)
		}
	}
}
