package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/internal/streamtest"
)

// procsWith counts the processes whose command line contains s.
func procsWith(s string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil &&
			strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			out = append(out, pid)
		}
	}
	return out
}

func fdCount(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

// podMonitor is the pid of the monitor of the pod with the state dir of e.
func podMonitor(t *testing.T, e *testEnv) int {
	t.Helper()
	pids := procsWith("monitor --pod")
	for _, p := range pids {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.Contains(string(b), e.state) {
			return p
		}
	}
	t.Fatal("no monitor")
	return 0
}

// streamSession is one session of the leak test; cut ends it from the
// client's side (a client killed mid-stream) once it is under way.
func streamSession(t *testing.T, d *daemonProc, i int, ctr, ttyCtr string) error {
	tr := transports[i%2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out streamtest.SyncBuffer
	cutWhen := func(marker string) {
		go func() {
			for ctx.Err() == nil && !strings.Contains(out.String(), marker) {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
		}()
	}
	switch i % 5 {
	case 0: // an exec that ends by itself
		err := d.execStream(t, ctx, ctr, tr, false, strings.NewReader("x"), &out, nil, nil, "sh", "-c", "head -c 1; echo done")
		if err != nil || out.String() != "xdone\n" {
			return fmt.Errorf("exec: %v %q", err, out.String())
		}
	case 1: // an exec whose client goes away while it runs
		cutWhen("started")
		d.execStream(t, ctx, ctr, tr, false, nil, &out, nil, nil, "sh", "-c", "echo started; exec sleep 7777")
	case 2: // a terminal exec whose client goes away
		pr, pw := io.Pipe()
		defer pw.Close()
		cutWhen("started")
		go pw.Write([]byte("echo started; sleep 7777\n"))
		d.execStream(t, ctx, ctr, tr, true, pr, &out, nil, &streamtest.OneSize{}, "sh")
	case 3: // an attach whose client goes away
		pr, pw := io.Pipe()
		defer pw.Close()
		cutWhen("line")
		go pw.Write([]byte("line\n"))
		r, err := d.rs.Attach(bg, &runtimeapi.AttachRequest{ContainerId: ctr, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			return err
		}
		executor(t, r.Url, tr).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: &out, Stderr: io.Discard})
	case 4: // an attach to a terminal whose client goes away
		pr, pw := io.Pipe()
		defer pw.Close()
		marker := fmt.Sprintf("tty-%d", i)
		cutWhen(marker)
		go pw.Write([]byte("echo " + marker + "\n"))
		r, err := d.rs.Attach(bg, &runtimeapi.AttachRequest{ContainerId: ttyCtr, Stdin: true, Stdout: true, Tty: true})
		if err != nil {
			return err
		}
		executor(t, r.Url, tr).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: &out, Tty: true,
			TerminalSizeQueue: &streamtest.OneSize{}})
	}
	if i%5 != 0 && ctx.Err() != context.Canceled {
		return fmt.Errorf("session %d was not cut by its client: %v (%q)", i, ctx.Err(), out.String())
	}
	return nil
}

// TestStreamingLeaks runs 100 exec and attach sessions, most of them cut
// by their client mid-stream, and checks that nothing stays behind: no
// process in the containers, no fd or goroutine in the daemon, no fd or
// helper of the monitor.
func TestStreamingLeaks(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimtl", "10.213.76.0/24"))
	cleanNetwork(t, "shimtl")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	pc := podConfig("leaks", e.logs)
	pod := d.runPod(t, pc)
	cc := ctrConfig("echo", img, "sh", "-c", "while read l; do echo $l; done")
	cc.Stdin = true
	ctr := d.create(t, pod, pc, cc)
	d.startCtr(t, ctr)
	tc := ctrConfig("tty", img, "sh")
	tc.Stdin, tc.Tty = true, true
	ttyCtr := d.create(t, pod, pc, tc)
	d.startCtr(t, ttyCtr)
	mon := podMonitor(t, e)

	for i := 0; i < 5; i++ { // warm up every kind
		if err := streamSession(t, d, i, ctr, ttyCtr); err != nil {
			t.Fatal(err)
		}
	}
	settle := func() (goroutines, fds, monFds int) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			left := append(procsWith("sleep 7777"), procsWith("monitor-helper --op")...)
			var ours []string
			for _, p := range left {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.Contains(string(b), "7777") ||
					strings.Contains(string(b), e.state) {
					ours = append(ours, strings.ReplaceAll(string(b), "\x00", " "))
				}
			}
			if len(ours) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("processes left by the sessions: %q", ours)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		return adminMetric(t, e, "go_goroutines"), fdCount(d.cmd.Process.Pid), fdCount(mon)
	}
	g0, f0, m0 := settle()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	sem := make(chan struct{}, 5)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := streamSession(t, d, i, ctr, ttyCtr); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var g1, f1, m1 int
	deadline := time.Now().Add(20 * time.Second)
	for {
		g1, f1, m1 = settle()
		if g1 <= g0+5 && f1 <= f0+3 && m1 <= m0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if g1 > g0+5 || f1 > f0+3 || m1 > m0 {
		t.Errorf("after 100 sessions: daemon goroutines %d -> %d, fds %d -> %d; monitor fds %d -> %d", g0, g1, f0, f1, m0, m1)
	}
	for _, id := range []string{ctr, ttyCtr} {
		if st := d.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("container %s is %v after the sessions", id, st.State)
		}
	}
	d.removeAllPods(t)
	d.stop(t)
}

// TestStreamingDaemonRestart: a daemon restart ends open sessions (their
// exec'd processes with them) but never the containers, and a terminal
// survives it.
func TestStreamingDaemonRestart(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimtr", "10.213.75.0/24"))
	cleanNetwork(t, "shimtr")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	pc := podConfig("restart", e.logs)
	pod := d.runPod(t, pc)
	ctr := d.create(t, pod, pc, ctrConfig("app", img, "sleep", "100000"))
	d.startCtr(t, ctr)
	tc := ctrConfig("tty", img, "sh")
	tc.Stdin, tc.Tty = true, true
	ttyCtr := d.create(t, pod, pc, tc)
	d.startCtr(t, ttyCtr)

	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		var out, tout streamtest.SyncBuffer
		execDone, attachDone := make(chan error, 1), make(chan error, 1)
		go func() {
			execDone <- d.execStream(t, context.Background(), ctr, "spdy", false, nil, &out, nil, nil,
				"sh", "-c", "echo started; exec sleep 8888")
		}()
		pr, pw := io.Pipe()
		go func() { attachDone <- d.attach(t, ttyCtr, "websocket", true, pr, &tout, nil) }()
		send(t, pw, "echo before-"+how+"\n", attachDone)
		waitUntil(t, "the sessions", func() bool {
			return strings.Contains(out.String(), "started") && strings.Contains(tout.String(), "before-"+how)
		})
		if how == "SIGTERM" {
			d.stop(t)
		} else {
			d.cmd.Process.Signal(syscall.SIGKILL)
			d.cmd.Wait()
			d.log.Close()
		}
		for name, done := range map[string]chan error{"exec": execDone, "attach": attachDone} {
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: the %s session did not end", how, name)
			}
		}
		waitUntil(t, "the exec'd process to end", func() bool { return len(procsWith("sleep 8888")) == 0 })
		pw.Close()
		d = e.start()
		for _, id := range []string{ctr, ttyCtr} {
			if st := d.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Fatalf("%s: container %s is %v", how, id, st.State)
			}
		}
		// The terminal is the same: the shell still answers.
		pr2, pw2 := io.Pipe()
		var tout2 streamtest.SyncBuffer
		done := make(chan error, 1)
		go func() { done <- d.attach(t, ttyCtr, "spdy", true, pr2, &tout2, nil) }()
		send(t, pw2, "echo after-$((1+1))\n", done)
		waitUntil(t, "the terminal after the restart", func() bool { return strings.Contains(tout2.String(), "after-2") })
		// (Its stdin is not stdin_once: the attach goes on until the
		// container is removed.)
		pw2.Close()
	}
	d.removeAllPods(t)
	d.stop(t)
}
