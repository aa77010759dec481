// Package oci tests `shim oci`, the runc-compatible CLI, as a binary:
// the execdrv suite through the oci-binary driver, and runc's CLI details
// (state JSON, signal names, exit codes, errors) containerd relies on.
package oci

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/execdrv/execdrvtest"
	"github.com/shim-cri/shim/pkg/libct/testbundle"
	"golang.org/x/sys/unix"
)

var shimBin string

func TestMain(m *testing.M) {
	if os.Getuid() == 0 {
		dir, err := os.MkdirTemp("", "shim-oci-test-")
		if err != nil {
			panic(err)
		}
		shimBin = filepath.Join(dir, "shim")
		if bin := os.Getenv("SHIM_BIN"); bin != "" {
			shimBin = bin
		} else if err := buildShim(shimBin); err != nil {
			fmt.Fprintln(os.Stderr, "build shim:", err)
			os.Exit(1)
		}
		// Containers are reparented to us when `shim oci` exits.
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

func TestDriverSuiteThroughShimOCI(t *testing.T) {
	needRoot(t)
	execdrvtest.Run(t, func(t *testing.T) execdrv.Driver { return execdrv.NewOCIBinary(shimBin, t.TempDir(), "oci") })
}

type cli struct {
	t    *testing.T
	root string
}

func newCLI(t *testing.T) *cli { return &cli{t: t, root: t.TempDir()} }

// run runs `shim oci --root R args...` and returns stdout, stderr, exit code.
func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(shimBin, append([]string{"oci", "--root", c.root}, args...)...)
	// Files, not pipes: a detached container inherits them and would
	// keep a pipe open.
	dir := c.t.TempDir()
	outf, _ := os.Create(filepath.Join(dir, "stdout"))
	errf, _ := os.Create(filepath.Join(dir, "stderr"))
	cmd.Stdout, cmd.Stderr = outf, errf
	err := cmd.Run()
	outf.Close()
	errf.Close()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "stdout"))
	errb, _ := os.ReadFile(filepath.Join(dir, "stderr"))
	return string(out), string(errb), code
}

func bundle(t *testing.T, args ...string) *testbundle.Bundle {
	b := testbundle.New(t, args...)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunExitCodeAndOutput(t *testing.T) {
	needRoot(t)
	c := newCLI(t)
	b := bundle(t, "/bin/sh", "-c", "echo hello; exit 3")
	out, _, code := c.run("run", "--bundle", b.Dir, "r1")
	if code != 3 || out != "hello\n" {
		t.Fatalf("run: code %d out %q", code, out)
	}
	if ls, _, _ := c.run("list", "-q"); ls != "" {
		t.Errorf("container left after run: %q", ls)
	}
}

// TestRunForwardsSignals: `run` delivers the signals it gets to the
// container's process and exits with its code.
func TestRunForwardsSignals(t *testing.T) {
	needRoot(t)
	c := newCLI(t)
	b := bundle(t, "/bin/sh", "-c", `trap "echo got-usr1" USR1; trap "exit 42" TERM; echo ready; while :; do sleep 0.1; done`)
	outPath := filepath.Join(t.TempDir(), "stdout")
	outf, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	cmd := exec.Command(shimBin, "oci", "--root", c.root, "run", "--bundle", b.Dir, "sig1")
	cmd.Stdout, cmd.Stderr = outf, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.run("delete", "-f", "sig1")
	waitFor := func(what string) {
		t.Helper()
		for i := 0; i < 500; i++ {
			if b, _ := os.ReadFile(outPath); strings.Contains(string(b), what) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		b, _ := os.ReadFile(outPath)
		cmd.Process.Kill()
		t.Fatalf("no %q from the container: %q", what, b)
	}
	waitFor("ready")
	cmd.Process.Signal(unix.SIGUSR1)
	waitFor("got-usr1")
	cmd.Process.Signal(unix.SIGTERM)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 42 {
		t.Fatalf("run after SIGTERM: %v, want exit status 42", err)
	}
}

func TestStateKillDeleteCLI(t *testing.T) {
	needRoot(t)
	c := newCLI(t)
	b := bundle(t, "/bin/sh", "-c", "trap 'exit 0' USR1; while :; do sleep 0.05; done")
	pidFile := filepath.Join(t.TempDir(), "pid")
	if _, e, code := c.run("create", "-b", b.Dir, "--pid-file", pidFile, "c1"); code != 0 {
		t.Fatalf("create: %s", e)
	}
	pidb, _ := os.ReadFile(pidFile)
	out, _, _ := c.run("state", "c1")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("state is not JSON: %q", out)
	}
	for _, k := range []string{"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"} {
		if _, ok := st[k]; !ok {
			t.Errorf("state has no %q: %s", k, out)
		}
	}
	if st["status"] != "created" || fmt.Sprint(st["pid"]) != string(pidb) || st["bundle"] != b.Dir {
		t.Errorf("state %s (pid file %s)", out, pidb)
	}
	if _, e, code := c.run("start", "c1"); code != 0 {
		t.Fatalf("start: %s", e)
	}
	for _, sig := range []string{"BOGUS", "0x10", "99"} {
		if _, _, code := c.run("kill", "c1", sig); code == 0 {
			t.Errorf("kill with signal %q succeeded", sig)
		}
	}
	if _, e, code := c.run("delete", "c1"); code == 0 {
		t.Errorf("delete of a running container without --force succeeded")
	} else if !strings.Contains(e, "running") {
		t.Errorf("delete error: %q", e)
	}
	if _, e, code := c.run("kill", "c1", "SIGUSR1"); code != 0 {
		t.Fatalf("kill USR1: %s", e)
	}
	var ws unix.WaitStatus
	var pid int
	fmt.Sscan(string(pidb), &pid)
	unix.Wait4(pid, &ws, 0, nil)
	if ws.ExitStatus() != 0 {
		t.Errorf("exit status %d", ws.ExitStatus())
	}
	out, _, _ = c.run("state", "c1")
	if !strings.Contains(out, `"status": "stopped"`) {
		t.Errorf("state after exit: %s", out)
	}
	if _, e, code := c.run("delete", "c1"); code != 0 {
		t.Fatalf("delete: %s", e)
	}
	// runc's wording, which containerd's shim looks for.
	if _, e, code := c.run("state", "c1"); code == 0 || !strings.Contains(e, "does not exist") {
		t.Errorf("state of a deleted container: %d %q", code, e)
	}
	if _, _, code := c.run("delete", "--force", "c1"); code != 0 {
		t.Errorf("delete --force of a missing container should succeed")
	}
}

func TestSignalNames(t *testing.T) {
	needRoot(t)
	for _, sig := range []string{"KILL", "SIGKILL", "9", "kill"} {
		c := newCLI(t)
		b := bundle(t, "sleep", "30")
		if _, e, code := c.run("run", "-d", "-b", b.Dir, "s1"); code != 0 {
			t.Fatalf("run -d: %s", e)
		}
		out, _, _ := c.run("state", "s1")
		var st struct{ Pid int }
		json.Unmarshal([]byte(out), &st)
		if _, e, code := c.run("kill", "s1", sig); code != 0 {
			t.Fatalf("kill %s: %s", sig, e)
		}
		var ws unix.WaitStatus
		unix.Wait4(st.Pid, &ws, 0, nil)
		if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
			t.Errorf("kill %s: status %v", sig, ws)
		}
		c.run("delete", "s1")
	}
}

func TestExecCLI(t *testing.T) {
	needRoot(t)
	c := newCLI(t)
	b := bundle(t, "sleep", "30")
	if _, e, code := c.run("run", "-d", "-b", b.Dir, "e1"); code != 0 {
		t.Fatalf("run -d: %s", e)
	}
	defer c.run("delete", "-f", "e1")
	out, e, code := c.run("exec", "--env", "A=b", "--cwd", "/tmp", "e1", "/bin/sh", "-c", "echo $A; pwd; exit 4")
	if code != 4 || out != "b\n/tmp\n" {
		t.Fatalf("exec: %d %q %q", code, out, e)
	}
	proc := filepath.Join(t.TempDir(), "p.json")
	os.WriteFile(proc, []byte(`{"args":["/bin/sh","-c","id -u"],"cwd":"/","user":{"uid":1000,"gid":1000},"env":["PATH=/bin"]}`), 0o644)
	out, e, code = c.run("exec", "--process", proc, "e1")
	if code != 0 || out != "1000\n" {
		t.Fatalf("exec --process: %d %q %q", code, out, e)
	}
	out, _, _ = c.run("ps", "--format", "json", "e1")
	var pids []int
	if json.Unmarshal([]byte(out), &pids) != nil || len(pids) != 1 {
		t.Errorf("ps: %q", out)
	}
	if _, _, code := c.run("exec", "e1", "/no/such"); code == 0 {
		t.Errorf("exec of a missing binary succeeded")
	}
}

func TestPauseResumeUpdateEventsCLI(t *testing.T) {
	needRoot(t)
	c := newCLI(t)
	b := bundle(t, "sleep", "30")
	if _, e, code := c.run("run", "-d", "-b", b.Dir, "p1"); code != 0 {
		t.Fatalf("run -d: %s", e)
	}
	defer c.run("delete", "-f", "p1")
	if _, e, code := c.run("pause", "p1"); code != 0 {
		t.Fatal(e)
	}
	if out, _, _ := c.run("state", "p1"); !strings.Contains(out, `"paused"`) {
		t.Errorf("state: %s", out)
	}
	if _, e, code := c.run("resume", "p1"); code != 0 {
		t.Fatal(e)
	}
	if _, e, code := c.run("update", "--memory", "50m", "--pids-limit", "20", "p1"); code != 0 {
		t.Fatal(e)
	}
	out, _, _ := c.run("events", "--stats", "p1")
	var ev struct {
		Type string
		Data struct {
			Memory struct{ Usage struct{ Limit uint64 } }
			Pids   struct{ Limit uint64 }
		}
	}
	if err := json.Unmarshal([]byte(out), &ev); err != nil || ev.Type != "stats" || ev.Data.Memory.Usage.Limit != 50<<20 || ev.Data.Pids.Limit != 20 {
		t.Errorf("events --stats: %q", out)
	}
	if out, _, _ := c.run("list", "--format", "json"); !strings.Contains(out, `"id":"p1"`) {
		t.Errorf("list json: %s", out)
	}
}

func TestFeaturesAndFlags(t *testing.T) {
	needRoot(t)
	c := newCLI(t)
	out, _, code := c.run("features")
	var f struct {
		OCIVersionMax string
		Linux         struct{ Namespaces []string }
	}
	if code != 0 || json.Unmarshal([]byte(out), &f) != nil || f.OCIVersionMax == "" || len(f.Linux.Namespaces) < 8 {
		t.Errorf("features: %q", out)
	}
	if _, e, code := c.run("--systemd-cgroup", "list"); code == 0 || !strings.Contains(e, "not supported") {
		t.Errorf("--systemd-cgroup: %d %q", code, e)
	}
	// --log --log-format json: errors land in the log as runc writes them.
	logf := filepath.Join(t.TempDir(), "log.json")
	cmd := exec.Command(shimBin, "oci", "--root", c.root, "--log", logf, "--log-format", "json", "start", "nope")
	if cmd.Run() == nil {
		t.Fatal("start of a missing container succeeded")
	}
	data, _ := os.ReadFile(logf)
	var e struct{ Level, Msg string }
	if json.Unmarshal(bytes.TrimSpace(data), &e) != nil || e.Level != "error" || !strings.Contains(e.Msg, "does not exist") {
		t.Errorf("log: %q", data)
	}
}

func TestConsoleSocket(t *testing.T) {
	needRoot(t)
	c := newCLI(t)
	b := testbundle.New(t, "/bin/sh", "-c", "tty")
	b.Spec.Process.Terminal = true
	b.Write()
	sockPath := filepath.Join(t.TempDir(), "console.sock")
	lfd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: sockPath}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(lfd, 1)
	defer unix.Close(lfd)
	got := make(chan int, 1)
	go func() {
		cfd, _, err := unix.Accept(lfd)
		if err != nil {
			got <- -1
			return
		}
		defer unix.Close(cfd)
		buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := unix.Recvmsg(cfd, buf, oob, 0)
		if err != nil {
			got <- -1
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		fds, _ := unix.ParseUnixRights(&msgs[0])
		got <- fds[0]
	}()
	if _, e, code := c.run("create", "-b", b.Dir, "--console-socket", sockPath, "t1"); code != 0 {
		t.Fatalf("create: %s", e)
	}
	defer c.run("delete", "-f", "t1")
	master := <-got
	if master < 0 {
		t.Fatal("no pty master received")
	}
	c.run("start", "t1")
	buf := make([]byte, 64)
	n, _ := unix.Read(master, buf)
	if !strings.HasPrefix(string(buf[:n]), "/dev/pts/0") {
		t.Errorf("tty output %q", buf[:n])
	}
	unix.Close(master)
	// terminal without a console socket is refused by create
	b2 := testbundle.New(t, "true")
	b2.Spec.Process.Terminal = true
	b2.Write()
	if _, _, code := c.run("create", "-b", b2.Dir, "t2"); code == 0 {
		t.Errorf("create of a terminal container without --console-socket succeeded")
	}
}

// buildShim builds cmd/shim, or, when the daemon does not build (other
// packages in progress), the minimal shimbin with the same oci and init
// commands.
func buildShim(out string) error {
	var errb bytes.Buffer
	cmd := exec.Command("go", "build", "-o", out, "github.com/shim-cri/shim/cmd/shim")
	cmd.Stderr = &errb
	if err := cmd.Run(); err == nil {
		return nil
	}
	fmt.Fprintf(os.Stderr, "cmd/shim does not build, testing test/oci/shimbin instead:\n%s", errb.String())
	cmd = exec.Command("go", "build", "-o", out, "github.com/shim-cri/shim/test/oci/shimbin")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}
