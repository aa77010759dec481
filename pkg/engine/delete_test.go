package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/monitor"
)

// fakeMonitor answers a pod's monitor socket the way the C monitor does
// when a container's process outlives the runtime's delete: "did not exit
// after delete" while the process runs, success once it is reaped.
type fakeMonitor struct {
	id   string
	proc *exec.Cmd

	mu     sync.Mutex
	exited bool
}

func startFakeMonitor(t *testing.T, sock, id string, proc *exec.Cmd) *fakeMonitor {
	t.Helper()
	m := &fakeMonitor{id: id, proc: proc}
	go func() {
		proc.Wait()
		m.mu.Lock()
		m.exited = true
		m.mu.Unlock()
	}()
	serveMonitor(t, sock, m.answer)
	return m
}

// serveMonitor answers the monitor socket sock the way the C monitor's
// protocol goes (a request line of JSON, a JSON response) with handle.
func serveMonitor(t *testing.T, sock string, handle func(monitor.Request) monitor.Response) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				line, err := bufio.NewReader(conn).ReadBytes('\n')
				if err != nil {
					return
				}
				var req monitor.Request
				json.Unmarshal(line, &req)
				resp := handle(req)
				json.NewEncoder(conn).Encode(&resp)
			}()
		}
	}()
}

func (m *fakeMonitor) answer(req monitor.Request) monitor.Response {
	m.mu.Lock()
	exited := m.exited
	m.mu.Unlock()
	var resp monitor.Response
	switch req.Op {
	case monitor.OpDelete:
		if !exited {
			w := errdefs.ToWire(fmt.Errorf("container %s did not exit after delete: %w", m.id, errdefs.ErrUnavailable))
			resp.Error = &w
		}
	case monitor.OpState:
		cs := monitor.ContainerState{ID: m.id, Pid: m.proc.Process.Pid}
		if exited {
			cs.Exited = &monitor.ExitRecord{}
		}
		resp.Containers = []monitor.ContainerState{cs}
	}
	return resp
}

// inCgroup starts sleep in a new cgroup at path (nil: no cgroup).
func inCgroup(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	if path == "" {
		return cmd
	}
	spec := &specs.Spec{Linux: &specs.Linux{CgroupsPath: path}}
	procs, err := libct.CreateCgroup(spec, "x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		if err := libct.RemoveCgroup(context.Background(), spec, "x"); err != nil {
			t.Errorf("remove cgroup %s: %v", path, err)
		}
	})
	for _, f := range procs {
		if err := os.WriteFile(f, []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	return cmd
}

// running reports whether the process has not been reaped.
func (m *fakeMonitor) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.exited
}

// TestDeleteKeepsRunningContainer: when the monitor answers "did not exit
// after delete", the container's cgroup is killed and its exit awaited
// before anything is removed; a process that cannot be killed that way
// keeps the container's record and the remove fails.
func TestDeleteKeepsRunningContainer(t *testing.T) {
	ctx := context.Background()
	old := deleteExitWait
	deleteExitWait = 2 * time.Second
	t.Cleanup(func() { deleteExitWait = old })

	// setup makes a running container whose process is in the cgroup
	// its spec names (or in none).
	setup := func(t *testing.T, inItsCgroup bool) (*Runtime, *Container, *fakeMonitor) {
		r := testRuntime(t)
		podID := newID()[:8] // a short socket path (sun_path is 107 bytes)
		pod := filepath.Join(r.o.State, "pods", podID)
		host, _ := hostVolume(t)
		c, _ := testContainer(t, r, pod, host)
		unmountAll(filepath.Join(c.Bundle, "rootfs", "data")) // no host mount in this test
		cg := "/shim-test-" + c.ID[:12]
		b, _ := json.Marshal(specs.Spec{Linux: &specs.Linux{CgroupsPath: cg}})
		if err := os.WriteFile(filepath.Join(c.Bundle, "config.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if !inItsCgroup {
			cg = ""
		}
		proc := inCgroup(t, cg)
		c.SandboxID, c.State, c.Pid = podID, ContainerRunning, proc.Process.Pid
		r.containers[c.ID] = c
		r.updateContainer(c, func(*Container) {})
		sock := filepath.Join(pod, monitor.SocketName)
		m := startFakeMonitor(t, sock, c.ID, proc)
		r.monitors[podID] = &podMonitor{client: &monitor.Client{Socket: sock}, cancel: func() {}}
		return r, c, m
	}

	t.Run("killed by cgroup", func(t *testing.T) {
		r, c, m := setup(t, true)
		if err := r.deleteContainer(ctx, c); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if m.running() {
			t.Fatalf("container deleted while its process %d runs", m.proc.Process.Pid)
		}
		if _, err := r.getContainer(c.ID); !errdefs.IsNotFound(err) {
			t.Errorf("record of a deleted container: %v", err)
		}
	})

	t.Run("cannot be killed", func(t *testing.T) {
		r, c, m := setup(t, false)
		err := r.deleteContainer(ctx, c)
		if !errdefs.IsUnavailable(err) {
			t.Fatalf("delete of a container whose process still runs: %v, want unavailable", err)
		}
		if !m.running() {
			t.Fatalf("process gone")
		}
		if _, err := r.getContainer(c.ID); err != nil {
			t.Errorf("record dropped while the process runs: %v", err)
		}
		if _, err := os.Stat(c.Bundle); err != nil {
			t.Errorf("bundle removed while the process runs: %v", err)
		}
		if _, err := r.o.Snapshotter.Stat(ctx, c.Snapshot); err != nil {
			t.Errorf("snapshot removed while the process runs: %v", err)
		}
		// Once it is gone, the remove is retried and succeeds.
		m.proc.Process.Kill()
		for i := 0; i < 500 && m.running(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if err := r.deleteContainer(ctx, c); err != nil {
			t.Fatalf("retried delete: %v", err)
		}
		if _, err := r.getContainer(c.ID); !errdefs.IsNotFound(err) {
			t.Errorf("record after the retried delete: %v", err)
		}
	})
}
