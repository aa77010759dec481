package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const report = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4">
  <testsuite name="CRI validation" tests="4">
    <testcase name="[It] a runs" classname="CRI validation" status="passed"></testcase>
    <testcase name="[It] b listed" classname="CRI validation" status="skipped">
      <skipped message="skipped - AppArmor is disabled on this host"></skipped>
    </testcase>
    <testcase name="[It] c filtered" classname="CRI validation" status="skipped">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] d listed but ran" classname="CRI validation" status="passed"></testcase>
  </testsuite>
</testsuites>`

func write(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewSkipFails(t *testing.T) {
	junit := write(t, "r.xml", report)
	list := write(t, "l.txt", "# expected\nreason: no AppArmor here\n[It] b listed\n[It] d listed but ran\n")
	var out bytes.Buffer
	err := run(junit, list, false, &out)
	if err == nil {
		t.Fatalf("a new skip passed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "NEW SKIP, not in "+list+": [It] c filtered") {
		t.Errorf("new skip not named:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "ran (drop it from "+list+"): [It] d listed but ran") {
		t.Errorf("listed spec that ran not reported:\n%s", out.String())
	}
}

func TestListedSkipsPass(t *testing.T) {
	junit := write(t, "r.xml", report)
	list := write(t, "l.txt", "reason: no AppArmor here\n[It] b listed\n\nreason: filtered in hack/e2e.sh\n[It] c filtered\n[It] z not registered on this host\n")
	var out bytes.Buffer
	if err := run(junit, list, false, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
}

func TestListNeedsReasons(t *testing.T) {
	junit := write(t, "r.xml", report)
	for _, l := range []string{"[It] b listed\n", "reason:\n[It] b listed\n", "reason: x\n[It] b listed\n[It] b listed\n"} {
		if err := run(junit, write(t, "l.txt", l), false, &bytes.Buffer{}); err == nil {
			t.Errorf("list %q accepted", l)
		}
	}
	if err := run(write(t, "e.xml", "<testsuites></testsuites>"), write(t, "l.txt", ""), false, &bytes.Buffer{}); err == nil {
		t.Error("an empty report accepted")
	}
}

func TestPrint(t *testing.T) {
	var out bytes.Buffer
	if err := run(write(t, "r.xml", report), "", true, &out); err != nil {
		t.Fatal(err)
	}
	want := "reason: skipped\n[It] c filtered\n\nreason: skipped - AppArmor is disabled on this host\n[It] b listed\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}
