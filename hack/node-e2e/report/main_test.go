package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A ginkgo v2 JSON report cut down to what matters: a suite node, a passed,
// a failed, a self-skipped and a filtered-out spec.
const sample = `[{"SuiteDescription": "E2eNode Suite", "SpecReports": [
 {"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"},
 {"ContainerHierarchyTexts": ["[sig-node] Pods"], "LeafNodeType": "It", "LeafNodeText": "should pass", "State": "passed"},
 {"ContainerHierarchyTexts": ["[sig-node] Pods"], "LeafNodeType": "It", "LeafNodeText": "should fail", "State": "failed",
  "Failure": {"Message": "Timed out after 20s.\nmore detail"}},
 {"ContainerHierarchyTexts": ["[sig-node] AppArmor"], "LeafNodeType": "It", "LeafNodeText": "should skip", "State": "skipped",
  "Failure": {"Message": "Only supported on cgroup v2"}},
 {"ContainerHierarchyTexts": ["[sig-node] Serial"], "LeafNodeType": "It", "LeafNodeText": "not selected", "State": "skipped"},
 {"LeafNodeType": "SynchronizedAfterSuite", "State": "failed", "Failure": {"Message": "kubelet did not stop"}}
]}]`

func TestSummary(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "report.json")
	if err := os.WriteFile(p, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	specs, suiteErrs, err := read(p)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := summary(&out, "shim", specs, suiteErrs); err != nil {
		t.Fatal(err)
	}
	want := `node e2e on shim: 3 specs ran: 1 passed, 1 failed, 1 skipped
SUITE   SynchronizedAfterSuite failed: kubelet did not stop
SKIPPED [sig-node] AppArmor should skip
        Only supported on cgroup v2
FAILED  [sig-node] Pods should fail
        Timed out after 20s.
`
	if out.String() != want {
		t.Errorf("summary:\n%s\nwant:\n%s", out.String(), want)
	}

	// Two runs compared: the first's failures by the second's outcome.
	a, b := filepath.Join(dir, "a.tsv"), filepath.Join(dir, "b.tsv")
	if err := writeTSV(a, specs); err != nil {
		t.Fatal(err)
	}
	other := []spec{{"passed", "[sig-node] Pods should fail", ""}, {"skipped", "[sig-node] AppArmor should skip", "no"}}
	if err := writeTSV(b, other); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := compare(&out, a, b); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"== 1 not passed in " + a + ", passed in " + b,
		"failed   [sig-node] Pods should fail",
		"== 1 not passed in " + a + ", skipped in " + b,
	} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("compare output lacks %q:\n%s", line, out.String())
		}
	}
}
