package monitor

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readLog(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func TestCRILogFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	l, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	fixed := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	l.now = func() time.Time { return fixed }
	long := strings.Repeat("x", maxLogLine*2+10)
	exact := strings.Repeat("y", maxLogLine)
	in := "hello\n\nworld\n" + long + "\n" + exact + "\ntail-no-newline"
	pr, pw := io.Pipe()
	done := make(chan error)
	go func() { done <- l.copyStream("stdout", pr) }()
	// Write in odd-sized pieces so lines cross reads.
	for i := 0; i < len(in); i += 777 {
		pw.Write([]byte(in[i:min(i+777, len(in))]))
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	l.close()
	ts := fixed.Format(time.RFC3339Nano)
	want := []string{
		ts + " stdout F hello",
		ts + " stdout F ",
		ts + " stdout F world",
		ts + " stdout P " + long[:maxLogLine],
		ts + " stdout P " + long[maxLogLine:2*maxLogLine],
		ts + " stdout F " + long[2*maxLogLine:],
		ts + " stdout F " + exact,
		ts + " stdout F tail-no-newline",
	}
	got := readLog(t, path)
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d:\n%v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: got %.60q, want %.60q", i, got[i], want[i])
		}
	}
}

func TestCRILogReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	l, _ := openLog(path)
	l.record("stderr", false, []byte("one"))
	l.flush()
	os.Rename(path, path+".1") // kubelet rotates
	if err := l.reopen(); err != nil {
		t.Fatal(err)
	}
	l.record("stderr", false, []byte("two"))
	l.close()
	if got := readLog(t, path+".1"); len(got) != 1 || !strings.HasSuffix(got[0], " stderr F one") {
		t.Errorf("rotated file: %v", got)
	}
	if got := readLog(t, path); len(got) != 1 || !strings.HasSuffix(got[0], " stderr F two") {
		t.Errorf("new file: %v", got)
	}
}
