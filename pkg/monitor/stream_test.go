package monitor

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/internal/streamtest"
	"github.com/shim-cri/shim/pkg/errdefs"
)

func shProc(script string) *specs.Process {
	return &specs.Process{Args: []string{"sh", "-c", script}, Cwd: "/", Env: []string{"PATH=/bin", "TERM=xterm"}}
}

// readAll reads f to EOF, a pty's EIO (no writer left) counting as EOF.
func readAll(f *os.File) ([]byte, error) {
	b, err := io.ReadAll(f)
	if errors.Is(err, syscall.EIO) {
		err = nil
	}
	return b, err
}

func TestMonitorExecStream(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	bundle := p.bundle(t, "sleep", "1000")
	p.run(t, "s1", bundle, "")

	// stdin, stdout, stderr and the exit code.
	s, err := p.c.Exec(ctx, "s1", shProc("cat; echo err >&2; exit 5"), true, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid <= 0 || s.Console != nil {
		t.Errorf("session %+v", s)
	}
	var out, errb []byte
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out, _ = readAll(s.Stdout) }()
	go func() { defer wg.Done(); errb, _ = readAll(s.Stderr) }()
	if _, err := s.Stdin.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	s.Stdin.Close()
	code, err := s.Wait()
	wg.Wait()
	s.Close()
	if err != nil || code != 5 || string(out) != "hello\n" || string(errb) != "err\n" {
		t.Errorf("exec: code %d %v, out %q, err %q", code, err, out, errb)
	}

	// Much output, none of it lost at the exit.
	s, err = p.c.Exec(ctx, "s1", shProc("head -c 10000000 /dev/zero; echo -n end"), false, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := readAll(s.Stdout)
	code, werr := s.Wait()
	s.Close()
	if err != nil || werr != nil || code != 0 || len(b) != 10000003 || !bytes.HasSuffix(b, []byte("end")) {
		t.Errorf("big exec: %d bytes %v, code %d %v", len(b), err, code, werr)
	}

	// A terminal: its size is the client's, its output comes through the master.
	s, err = p.c.Exec(ctx, "s1", shProc("tty; stty size; exit 3"), false, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Console == nil || s.Stdout != nil {
		t.Fatalf("tty session %+v", s)
	}
	// The size set before the shell reads it (it runs right away, so it
	// may be too late): the test accepts either.
	unix.IoctlSetWinsize(int(s.Console.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 100})
	b, err = readAll(s.Console)
	code, werr = s.Wait()
	s.Close()
	if err != nil || werr != nil || code != 3 || !strings.Contains(string(b), "/dev/pts/") {
		t.Errorf("tty exec: %q %v, code %d %v", b, err, code, werr)
	}

	// Closing the session kills the process.
	s, err = p.c.Exec(ctx, "s1", shProc("exec sleep 999"), false, false)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.Pid
	s.Close()
	waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil })

	// The container's exit ends its exec sessions, with their exit code.
	s, err = p.c.Exec(ctx, "s1", shProc("exec sleep 999"), false, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpKill, ID: "s1", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	code, err = s.Wait()
	s.Close()
	if err != nil || code != 137 {
		t.Errorf("exec in a container that stopped: %d %v", code, err)
	}
	waitExit(t, bundle)
	if _, err := p.c.Exec(ctx, "s1", shProc("true"), false, false); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("exec in an exited container: %v", err)
	}
	if _, err := p.c.Exec(ctx, "nope", shProc("true"), false, false); !errdefs.IsNotFound(err) {
		t.Errorf("exec in an unknown container: %v", err)
	}
	if _, err := p.c.Exec(ctx, "s1", &specs.Process{Cwd: "/"}, false, false); err == nil {
		t.Errorf("exec without args succeeded")
	}
}

func TestMonitorAttach(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	bundle := p.bundle(t, "sh", "-c", "while read l; do echo out:$l; echo err:$l >&2; done; exit 4")
	logPath := filepath.Join(t.TempDir(), "0.log")
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "a1", Bundle: bundle, LogPath: logPath, Stdin: true, StdinOnce: true}); err != nil {
		t.Fatal(err)
	}
	// Attached before the start: nothing is missed.
	a1, err := p.c.Attach(ctx, "a1", true, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "a1"}); err != nil {
		t.Fatal(err)
	}
	a2, err := p.c.Attach(ctx, "a1", false, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if a1.Stdin == nil || a2.Stdin != nil {
		t.Fatalf("stdin of the attachments: %v %v", a1.Stdin, a2.Stdin)
	}
	var o1, e1, o2, e2 streamtest.SyncBuffer
	done := make(chan error, 2)
	go func() { done <- a1.Copy(&o1, &e1) }()
	go func() { done <- a2.Copy(&o2, &e2) }()
	if _, err := a1.Stdin.Write([]byte("x\ny\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(o2.String(), "out:y") && strings.Contains(e2.String(), "err:y") })
	a1.Stdin.Close()
	// stdin_once: the daemon closes the container's stdin after the attach.
	if err := p.c.CloseStdin(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("attach: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("attach did not end with the container")
		}
	}
	if rec := waitExit(t, bundle); rec.Code != 4 {
		t.Errorf("exit %+v", rec)
	}
	if o1.String() != "out:x\nout:y\n" || e1.String() != "" || o2.String() != "out:x\nout:y\n" || e2.String() != "err:x\nerr:y\n" {
		t.Errorf("attached output: %q %q / %q %q", o1.String(), e1.String(), o2.String(), e2.String())
	}
	a1.Close()
	a2.Close()
	log, _ := os.ReadFile(logPath)
	for _, want := range []string{" stdout F out:x\n", " stderr F err:y\n"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if _, err := p.c.Attach(ctx, "a1", false, true, true); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("attach to an exited container: %v", err)
	}

	// A client that goes away is forgotten; the container and its log go on.
	b2 := p.bundle(t, "sh", "-c", "while true; do echo tick; sleep 0.05; done")
	log2 := filepath.Join(t.TempDir(), "0.log")
	p.run(t, "a2", b2, log2)
	for i := 0; i < 20; i++ {
		a, err := p.c.Attach(ctx, "a2", false, true, true)
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
	}
	n0 := strings.Count(readFile(t, log2), "tick")
	waitFor(t, func() bool { return strings.Count(readFile(t, log2), "tick") > n0+3 })
	if fds, _ := monitorUsage(t, p.monitorPid(t)); fds > 20 {
		t.Errorf("the monitor has %d fds after 20 attachments ended", fds)
	}
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMonitorTTYContainer(t *testing.T) {
	p := spawnMonitor(t)
	ctx := ctxT(t)
	b := p.newBundle(t, "sh")
	b.Spec.Process.Terminal = true
	b.Spec.Process.Env = append(b.Spec.Process.Env, "PS1=$ ")
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "0.log")
	if _, err := p.c.Call(ctx, &Request{Op: OpCreate, ID: "t1", Bundle: b.Dir, LogPath: logPath, Tty: true, Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Call(ctx, &Request{Op: OpStart, ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	a, err := p.c.Attach(ctx, "t1", true, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Stdin == nil {
		t.Fatal("no terminal for the attach")
	}
	var out streamtest.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- a.Copy(&out, nil) }()
	if err := unix.IoctlSetWinsize(int(a.Stdin.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 77}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Stdin.Write([]byte("tty; stty size; echo mark-$((6*7))\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "mark-42") })
	if !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "33 77") {
		t.Errorf("terminal output: %q", out.String())
	}
	// A second attachment sees the same terminal.
	a2, err := p.c.Attach(ctx, "t1", true, true, false)
	if err != nil {
		t.Fatal(err)
	}
	var out2 streamtest.SyncBuffer
	done2 := make(chan error, 1)
	go func() { done2 <- a2.Copy(&out2, nil) }()
	a2.Stdin.Write([]byte("exit 3\n"))
	for _, d := range []chan error{done, done2} {
		select {
		case err := <-d:
			if err != nil {
				t.Errorf("attach: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("attach did not end with the container")
		}
	}
	a.Close()
	a2.Close()
	if rec := waitExit(t, b.Dir); rec.Code != 3 {
		t.Errorf("exit %+v", rec)
	}
	// The log has the terminal's output as the stdout stream.
	log := readFile(t, logPath)
	if !strings.Contains(log, " stdout F mark-42\r\n") || strings.Contains(log, " stderr ") {
		t.Errorf("log of a terminal:\n%s", log)
	}
}
