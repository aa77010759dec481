package execdrv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLastLogError: the cause runc's C stage logs as fatal is kept next to
// the generic error its Go side logs last.
func TestLastLogError(t *testing.T) {
	for _, tc := range []struct{ name, log, want string }{
		{"runc nsexec failure",
			`{"level":"fatal","msg":"nsexec[32509]: failed to update /proc/self/oom_score_adj: Permission denied","time":"2026-12-04T09:58:25Z"}` + "\n" +
				`{"level":"error","msg":"runc run failed: unable to start container process: can't get final child's PID from pipe: EOF","time":"2026-12-04T09:58:25Z"}` + "\n",
			"runc run failed: unable to start container process: can't get final child's PID from pipe: EOF (nsexec[32509]: failed to update /proc/self/oom_score_adj: Permission denied)"},
		{"one error", `{"level":"warning","msg":"w"}` + "\n" + `{"level":"error","msg":"boom"}` + "\n", "boom"},
		{"fatal last", `{"level":"fatal","msg":"f"}` + "\n", "f"},
		{"nothing", "not json\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "log.json")
			if err := os.WriteFile(p, []byte(tc.log), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := lastLogError(p); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
