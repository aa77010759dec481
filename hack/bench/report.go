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

// goal is what an issue asks of a mode's primary metric: the ratio of shim
// to the better containerd at most (or, for throughput, at least) Value.
type goal struct {
	AtLeast bool // higher is better
	Value   float64
}

func (g goal) String() string {
	if g.AtLeast {
		return fmt.Sprintf("≥ %.2f", g.Value)
	}
	return fmt.Sprintf("≤ %.2f", g.Value)
}

func (g goal) met(r float64) bool {
	if g.AtLeast {
		return r >= g.Value
	}
	return r <= g.Value
}

func (g goal) verdict(r float64) string {
	if g.met(r) {
		return "met"
	}
	return "not met"
}

// goals per mode (issues 2, 4, 7 and 11), of the median ratio of the primary
// metric against the better peer. The report and the text output print
// them next to the measured ratio; nothing here asserts them.
var goals = map[string]goal{
	"start":             {Value: 0.10},
	"start-shared-pid":  {Value: 0.20},
	"concurrent":        {Value: 0.10},
	"pull":              {Value: 0.50},
	"exec":              {Value: 0.50},
	"exec-stream":       {Value: 0.50},
	"stream-throughput": {AtLeast: true, Value: 1},
	"memory":            {Value: 0.25},
	"idle":              {Value: 0.50},
	"rss-after":         {Value: 0.50},
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
	case "MiB/s":
		return fmt.Sprintf("%.1f MiB/s", v)
	case "ms/s":
		return fmt.Sprintf("%.2f ms/s", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// reportRow is one mode of one run: the primary metric's summaries and
// ratios.
type reportRow struct {
	mode, metric, unit string
	vals               map[string]Summary // by target name
	ratios             map[string]record  // by "A/B"
	better             *record
}

// betterRecord is the row's ratio against the better peer: the "better"
// record, or with one peer its ratio.
func (r *reportRow) betterRecord() *record {
	if r.better != nil {
		return r.better
	}
	if len(r.ratios) == 1 {
		for _, rec := range r.ratios {
			return &rec
		}
	}
	return nil
}

func ratioCell(r *record) string {
	if r == nil || r.MedianRatio == nil {
		return "n/a"
	}
	c := fmt.Sprintf("**%.3f**", *r.MedianRatio)
	if r.P90Ratio != nil {
		c += fmt.Sprintf(" / %.3f", *r.P90Ratio)
	}
	return c
}

// markdown prints one row per mode (and run) with every target's median,
// the ratio of A to each peer and to the better peer, and the goal; then
// every target's summary. A file without ratios gets the summaries only.
func markdown(recs []record, w io.Writer) error {
	var targets, pairs []string // columns, in order of appearance
	seen := map[string]bool{}
	addCol := func(list *[]string, name string) {
		if !seen[name] {
			seen[name] = true
			*list = append(*list, name)
		}
	}
	for _, r := range recs { // A first, then the peers
		if r.Type == "run" {
			for _, t := range r.Targets {
				if t.Label == "A" {
					addCol(&targets, t.Name)
				}
			}
		}
	}
	for _, r := range recs {
		if r.Type == "run" {
			for _, t := range r.Targets {
				addCol(&targets, t.Name)
			}
		}
	}
	var rows []*reportRow
	byKey := map[string]*reportRow{}
	row := func(r record) *reportRow {
		k := r.RunID + "\x00" + r.Mode
		if byKey[k] == nil {
			byKey[k] = &reportRow{mode: r.Mode, metric: r.Metric, unit: r.Unit, vals: map[string]Summary{}, ratios: map[string]record{}}
			rows = append(rows, byKey[k])
		}
		return byKey[k]
	}
	var s strings.Builder
	s.WriteString("| mode | target | metric | n | median | p90 | min | max | stddev |\n")
	s.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	var ratios, singles int
	for _, r := range recs {
		if !r.Primary {
			continue
		}
		switch {
		case r.Type == "summary" && r.Summary != nil:
			singles++
			addCol(&targets, r.Target)
			row(r).vals[r.Target] = *r.Summary
			fmt.Fprintf(&s, "| %s | %s | %s | %d | %s | %s | %s | %s | %s |\n", r.Mode, r.Target, r.Metric, r.N,
				fmtVal(r.Median, r.Unit), fmtVal(r.P90, r.Unit), fmtVal(r.Min, r.Unit), fmtVal(r.Max, r.Unit), fmtVal(r.Stddev, r.Unit))
		case r.Type == "ratio" && r.Better:
			ratios++
			rr := r
			row(r).better = &rr
		case r.Type == "ratio":
			ratios++
			pair := r.A + "/" + r.B
			addCol(&pairs, pair)
			row(r).ratios[pair] = r
		}
	}
	if ratios == 0 && singles == 0 {
		return fmt.Errorf("no ratio or summary records")
	}
	var b strings.Builder
	if ratios > 0 {
		ratioTable(&b, rows, targets, pairs)
	}
	if singles > 0 {
		b.WriteString(s.String())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ratioTable writes one row per mode: every runtime's median, the ratio of
// A to each peer and to the better peer, and the goal.
func ratioTable(b *strings.Builder, rows []*reportRow, targets, pairs []string) {
	b.WriteString("| mode | metric")
	for _, t := range targets {
		fmt.Fprintf(b, " | %s", t)
	}
	for _, p := range pairs {
		fmt.Fprintf(b, " | %s (p50 / p90)", p)
	}
	a := "A"
	if len(pairs) > 0 {
		a, _, _ = strings.Cut(pairs[0], "/")
	}
	fmt.Fprintf(b, " | %s/better (p50 / p90) | goal | met |\n|---|---", a)
	b.WriteString(strings.Repeat("|---:", len(targets)+len(pairs)+1))
	b.WriteString("|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(b, "| %s | %s", r.mode, r.metric)
		for _, t := range targets {
			if v, ok := r.vals[t]; ok {
				fmt.Fprintf(b, " | %s", fmtVal(v.Median, r.unit))
			} else {
				b.WriteString(" | ")
			}
		}
		for _, p := range pairs {
			if rec, ok := r.ratios[p]; ok {
				fmt.Fprintf(b, " | %s", ratioCell(&rec))
			} else {
				b.WriteString(" | ")
			}
		}
		br := r.betterRecord()
		cell := ratioCell(br)
		if r.better != nil {
			if br.BP90 != "" && br.BP90 != br.B {
				cell += fmt.Sprintf(" (%s / %s)", br.B, br.BP90)
			} else {
				cell += fmt.Sprintf(" (%s)", br.B)
			}
		}
		g, hasGoal := goals[r.mode]
		verdict := ""
		switch {
		case !hasGoal:
		case br == nil || br.MedianRatio == nil:
			verdict = "n/a"
		default:
			verdict = g.verdict(*br.MedianRatio)
		}
		goalText := ""
		if hasGoal {
			goalText = g.String()
		}
		fmt.Fprintf(b, " | %s | %s | %s |\n", cell, goalText, verdict)
	}
	b.WriteString("\n")
}
