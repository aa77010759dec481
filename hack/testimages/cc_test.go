package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// programs compiles c/*.c and writes the binaries to a temporary directory.
func programs(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	bins, err := compileC(context.Background(), "gcc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range bins {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestCProgramsStatic(t *testing.T) {
	dir := programs(t)
	for _, p := range []string{"pause", "nginx", "nnp", "pgrep", "nmeter"} {
		interp, libs, err := elfDeps(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if interp != "" || len(libs) != 0 {
			t.Errorf("%s is dynamically linked: interpreter %q, libraries %v", p, interp, libs)
		}
	}
}

func TestPgrep(t *testing.T) {
	dir := programs(t)
	pgrep := filepath.Join(dir, "pgrep")
	// A command line no other process on the machine has.
	arg := fmt.Sprintf("%d.%d", 3000+os.Getpid()%1000, time.Now().UnixNano()%100000)
	sleep := exec.Command("sleep", arg)
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	pattern := `^sleep ` + strings.ReplaceAll(arg, ".", `\.`) + `$`
	pid := strconv.Itoa(sleep.Process.Pid)

	for _, tc := range []struct {
		args []string
		out  string
		code int
	}{
		{[]string{"-f", pattern}, pid + "\n", 0},
		{[]string{"-f", "-l", pattern}, pid + " sleep " + arg + "\n", 0},
		{[]string{"-f", "-c", pattern}, "1\n", 0},
		{[]string{"-f", "-x", "sleep " + strings.ReplaceAll(arg, ".", `\.`)}, pid + "\n", 0},
		{[]string{"-f", "-x", "sleep"}, "", 1},
		{[]string{"-f", "("}, "", 2},
		{[]string{}, "", 2},
	} {
		out, err := exec.Command(pgrep, tc.args...).Output()
		if string(out) != tc.out || exitCode(err) != tc.code {
			t.Errorf("pgrep %q: %q exit %d, want %q exit %d", tc.args, out, exitCode(err), tc.out, tc.code)
		}
	}
	// By name (comm), the way critest runs `pgrep sleep`: our pid is among them.
	out, err := exec.Command(pgrep, "-x", "sleep").Output()
	if err != nil || !containsLine(string(out), pid) {
		t.Errorf("pgrep -x sleep: %q (%v), want a line %s", out, err, pid)
	}

	if err := sleep.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sleep.Wait()
	out, err = exec.Command(pgrep, "-f", pattern).Output()
	if len(out) != 0 || exitCode(err) != 1 {
		t.Errorf("after kill: %q exit %d, want nothing and exit 1", out, exitCode(err))
	}
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestPauseExitsZeroOnSignal(t *testing.T) {
	dir := programs(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(filepath.Join(dir, "pause"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Still there after a while: it does not exit on its own.
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			t.Fatalf("pause exited by itself: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pause on %v: %v, want exit 0", sig, err)
			}
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("pause ignored %v", sig)
		}
	}
	out, err := exec.Command(filepath.Join(dir, "pause"), "-v").Output()
	if err != nil || !strings.HasPrefix(string(out), "pause version ") {
		t.Errorf("pause -v: %q, %v", out, err)
	}
}

func TestNnpPrintsEffectiveUID(t *testing.T) {
	dir := programs(t)
	out, err := exec.Command(filepath.Join(dir, "nnp")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Effective uid: %d\n", os.Geteuid()); string(out) != want {
		t.Errorf("nnp printed %q, want %q", out, want)
	}
}

// TestNmeter: the node e2e container lifecycle specs take the first line of
// `nmeter -d0 '%3t'` as the time of day with milliseconds.
func TestNmeter(t *testing.T) {
	dir := programs(t)
	nmeter := filepath.Join(dir, "nmeter")
	cmd := exec.Command(nmeter, "-d0", "at %3t %% %t")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadFull(stdout, buf[:len("at 12:34:56.789 % 12:34:56\n")])
	stdout.Close() // like `head -n1`: nmeter must end on the closed pipe
	if err != nil {
		t.Fatalf("read %q: %v", buf[:n], err)
	}
	if !regexp.MustCompile(`^at \d\d:\d\d:\d\d\.\d{3} % \d\d:\d\d:\d\d\n$`).Match(buf[:n]) {
		t.Errorf("line %q", buf[:n])
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("nmeter did not end when its reader went away")
	}
	// System counters are refused, not printed wrong.
	if out, err := exec.Command(nmeter, "%c").CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(out), "not supported") {
		t.Errorf("nmeter %%c: %q exit %d", out, exitCode(err))
	}
}

func TestShellStandaloneDetection(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox")
	}
	_, by := buildAll(t)
	ctx := context.Background()
	for _, tc := range []struct {
		bb   string
		want bool
	}{
		{"/bin/busybox", isStatic(t, "/bin/busybox")}, // Debian's busybox-static is standalone
		{by.in.busybox, false},
	} {
		got, err := shellIsStandalone(ctx, tc.bb)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: standalone %v, want %v", tc.bb, got, tc.want)
		}
	}
}

func isStatic(t *testing.T, p string) bool {
	interp, _, err := elfDeps(p)
	if err != nil {
		t.Fatal(err)
	}
	return interp == ""
}
