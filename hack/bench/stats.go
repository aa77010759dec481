package main

import (
	"math"
	"sort"
)

// Summary describes a set of samples of one metric.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
	Stddev float64 `json:"stddev"`
}

// Summarize computes the summary of xs. Percentiles interpolate linearly
// between the closest ranks (numpy's default); Stddev is the sample standard
// deviation (n-1), 0 for a single sample. xs is not modified.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	mean := sum / float64(len(s))
	var sq float64
	for _, x := range s {
		sq += (x - mean) * (x - mean)
	}
	sd := 0.0
	if len(s) > 1 {
		sd = math.Sqrt(sq / float64(len(s)-1))
	}
	return Summary{
		N:      len(s),
		Median: percentile(s, 0.5),
		P90:    percentile(s, 0.9),
		Min:    s[0],
		Max:    s[len(s)-1],
		Mean:   mean,
		Stddev: sd,
	}
}

// percentile of sorted s, q in [0,1], interpolating between closest ranks.
func percentile(s []float64, q float64) float64 {
	if len(s) == 1 {
		return s[0]
	}
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	frac := pos - float64(lo)
	return s[lo] + (s[hi]-s[lo])*frac
}

// ratio returns a/b, or NaN-free 0 with ok=false when b is 0.
func ratio(a, b float64) (float64, bool) {
	if b == 0 {
		return 0, false
	}
	return a / b, true
}
