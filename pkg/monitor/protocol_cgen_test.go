package monitor

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// TestCHeaderUpToDate fails when cmon/protocol.h is not what the Go
// definitions generate (a field, op or class renamed or added on one side
// only): run `go generate ./pkg/monitor`.
func TestCHeaderUpToDate(t *testing.T) {
	got, err := os.ReadFile(CHeaderFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := CHeader(); !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run `go generate ./pkg/monitor`\n--- generated:\n%s", CHeaderFile, want)
	}
}

// TestCHeaderNamesEveryField checks the generator itself: every JSON
// field of the request and every class appears in the header.
func TestCHeaderNamesEveryField(t *testing.T) {
	h := string(CHeader())
	for _, f := range jsonFields(reflect.TypeOf(Request{})) {
		if !strings.Contains(h, "CM_REQ_"+macro(f.name)+",") || !strings.Contains(h, "= \""+f.name+"\",") {
			t.Errorf("request field %q is missing from the header", f.name)
		}
	}
	for _, c := range errdefs.ClassNames() {
		if !strings.Contains(h, "#define CM_E_"+macro(c)+" \""+c+"\"") {
			t.Errorf("class %q is missing from the header", c)
		}
	}
	if macro("logPath") != "LOG_PATH" || macro("not_found") != "NOT_FOUND" || macro("monitorPid") != "MONITOR_PID" {
		t.Errorf("macro names: %s %s %s", macro("logPath"), macro("not_found"), macro("monitorPid"))
	}
}

var cComment = regexp.MustCompile(`(?s)/\*.*?\*/`)

// TestCMonitorUsesGeneratedNames fails when the C monitor spells an error
// class or an op as a string literal instead of using protocol.h.
func TestCMonitorUsesGeneratedNames(t *testing.T) {
	files, err := filepath.Glob("cmon/*.c")
	if err != nil || len(files) == 0 {
		t.Fatalf("no C files: %v", err)
	}
	var names []string
	names = append(names, errdefs.ClassNames()...)
	names = append(names, Ops...)
	names = append(names, helperOps...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = cComment.ReplaceAll(b, nil)
		for _, n := range names {
			if regexp.MustCompile(`"` + regexp.QuoteMeta(n) + `"`).Match(b) {
				t.Errorf("%s spells %q as a literal: use its protocol.h name", f, n)
			}
		}
	}
}
