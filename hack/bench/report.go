package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// goals are the ratios (shim / containerd, lower is better) the issues set
// for each mode's primary metric. The report prints them next to the
// measured ratio; nothing here asserts them.
var goals = map[string]string{
	"pull":       "≤ 0.50",
	"start":      "≤ 0.33",
	"concurrent": "≤ 0.33",
	"memory":     "≤ 0.25",
	"idle":       "≤ 0.50",
}

// readRecords reads the JSON lines of earlier runs; blank lines and lines
// that are not JSON objects (a shell's notes) are skipped.
func readRecords(r io.Reader) ([]json.RawMessage, []record, error) {
	var raws []json.RawMessage
	var recs []record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var rec record
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, nil, fmt.Errorf("line %q: %w", line, err)
		}
		raws = append(raws, json.RawMessage(append([]byte(nil), line...)))
		recs = append(recs, rec)
	}
	return raws, recs, sc.Err()
}

// writeReport prints a markdown table of the ratio records in the file at
// in (or of the summaries, when a run had one target), and with jsonOut
// writes every record as one JSON document.
func writeReport(in, jsonOut string, w io.Writer) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	raws, recs, err := readRecords(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if jsonOut != "" {
		doc, err := json.MarshalIndent(map[string]any{"records": raws}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(jsonOut, append(doc, '\n'), 0o644); err != nil {
			return err
		}
	}
	return markdown(recs, w)
}

func fmtVal(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	case "KiB":
		return fmt.Sprintf("%.0f KiB", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func markdown(recs []record, w io.Writer) error {
	var b strings.Builder
	var ratios, singles int
	b.WriteString("| mode | metric | A | B | A median | B median | A/B median | A/B p90 | goal |\n")
	b.WriteString("|---|---|---|---|---:|---:|---:|---:|---|\n")
	for _, r := range recs {
		if r.Type != "ratio" || !r.Primary {
			continue
		}
		ratios++
		med, p90 := "n/a", "n/a"
		if r.MedianRatio != nil {
			med = fmt.Sprintf("**%.3f**", *r.MedianRatio)
		}
		if r.P90Ratio != nil {
			p90 = fmt.Sprintf("%.3f", *r.P90Ratio)
		}
		var ma, mb string
		if r.MedianA != nil {
			ma = fmtVal(*r.MedianA, r.Unit)
		}
		if r.MedianB != nil {
			mb = fmtVal(*r.MedianB, r.Unit)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Mode, r.Metric, r.A, r.B, ma, mb, med, p90, goals[r.Mode])
	}
	if ratios == 0 {
		b.Reset()
	}
	var s strings.Builder
	s.WriteString("| mode | target | metric | n | median | p90 | min | max | stddev |\n")
	s.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range recs {
		if r.Type != "summary" || !r.Primary || r.Summary == nil {
			continue
		}
		singles++
		fmt.Fprintf(&s, "| %s | %s | %s | %d | %s | %s | %s | %s | %s |\n", r.Mode, r.Target, r.Metric, r.N,
			fmtVal(r.Median, r.Unit), fmtVal(r.P90, r.Unit), fmtVal(r.Min, r.Unit), fmtVal(r.Max, r.Unit), fmtVal(r.Stddev, r.Unit))
	}
	if ratios == 0 && singles == 0 {
		return fmt.Errorf("no ratio or summary records")
	}
	if ratios > 0 {
		b.WriteString("\n")
	}
	if singles > 0 {
		b.WriteString(s.String())
	}
	_, err := io.WriteString(w, b.String())
	return err
}
