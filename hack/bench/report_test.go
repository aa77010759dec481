package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportFromRun(t *testing.T) {
	var log []string
	ea := serveFake(t, &fakeCRI{name: "shim", log: &log})
	eb := serveFake(t, &fakeCRI{name: "containerd", log: &log})
	var out, errOut bytes.Buffer
	if rc := run([]string{"-mode", "pull", "-n", "2", "-endpoint", ea, "-compare", eb}, &out, &errOut); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errOut.String())
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "r.jsonl")
	// A shell's note between the records is skipped.
	if err := os.WriteFile(in, append([]byte("# a note\n\n"), out.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	var ratio record
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Type == "ratio" {
			ratio = r
		}
	}
	if ratio.MedianRatio == nil {
		t.Fatalf("no ratio in %s", out.String())
	}

	jsonOut := filepath.Join(dir, "r.json")
	var md bytes.Buffer
	if err := writeReport(in, jsonOut, &md); err != nil {
		t.Fatal(err)
	}
	// One peer: the better one is that peer.
	cell := fmt.Sprintf("**%.3f** / %.3f", *ratio.MedianRatio, *ratio.P90Ratio)
	verdict := "not met"
	if *ratio.MedianRatio <= 0.5 {
		verdict = "met"
	}
	row := fmt.Sprintf("| pull | pull_ms | %.1f ms | %.1f ms | %s | %s | ≤ 0.50 | %s |", *ratio.MedianA, *ratio.MedianB, cell, cell, verdict)
	if !strings.Contains(md.String(), row) {
		t.Errorf("markdown lacks %q:\n%s", row, md.String())
	}
	if !strings.Contains(md.String(), "| pull | shim | pull_ms | 2 |") || !strings.Contains(md.String(), "| pull | containerd | pull_ms | 2 |") {
		t.Errorf("markdown lacks the summaries:\n%s", md.String())
	}

	var doc struct {
		Records []json.RawMessage `json:"records"`
	}
	data, err := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s is not JSON: %v", jsonOut, err)
	}
	if want := strings.Count(strings.TrimSpace(out.String()), "\n") + 1; len(doc.Records) != want {
		t.Errorf("%d records in the JSON document, want %d", len(doc.Records), want)
	}
}

func TestReportErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":   "",
		"broken":  "{\"type\": \n",
		"no rows": `{"type":"run","mode":"pull"}` + "\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		var md bytes.Buffer
		if err := writeReport(p, "", &md); err == nil {
			t.Errorf("%s: no error, printed %q", name, md.String())
		}
	}
	if err := writeReport(filepath.Join(dir, "missing"), "", &bytes.Buffer{}); err == nil {
		t.Error("missing file: no error")
	}
}
