package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// ReadyFdEnv names the fd on which a starting monitor reports readiness.
const ReadyFdEnv = "_SHIM_MONITOR_READY_FD"

// selectEnv, set to "1", makes the binary run the C monitor of
// pkg/monitor/cmon in its constructor.
const selectEnv = "_SHIM_CMONITOR"

// SpawnOpts says how to start a pod's monitor.
type SpawnOpts struct {
	Exe   string   // the shim binary (it must link pkg/monitor/cmon)
	PodID string   //
	Dir   string   // pod state directory
	Args  []string // extra flags for `shim monitor` (driver selection, log level)
}

// Spawn starts the monitor of a pod, detached from the caller (it forks
// and its first process exits, so it is reparented to the caller's
// subreaper or init), and waits until it serves its socket.
func Spawn(ctx context.Context, o SpawnOpts) (*Client, error) {
	dropPageCache(o.Exe)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	logf, err := os.OpenFile(filepath.Join(o.Dir, "monitor.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		w.Close()
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"shim", "monitor", "--pod", o.PodID, "--dir", o.Dir}, o.Args...)
	cmd := &exec.Cmd{
		Path:       o.Exe,
		Args:       args,
		Env:        append(cleanEnv(), selectEnv+"=1", ReadyFdEnv+"=3"),
		Dir:        "/",
		Stdout:     logf,
		Stderr:     logf,
		ExtraFiles: []*os.File{w},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("starting monitor: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("monitor did not detach: %w", err)
	}
	type result struct {
		b   []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(io.LimitReader(r, 64<<10))
		res <- result{b, err}
	}()
	select {
	case <-ctx.Done():
		r.Close()
		return nil, fmt.Errorf("waiting for the monitor: %w", ctx.Err())
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("monitor of pod %s not ready after 30s: %w", o.PodID, errdefs.ErrUnavailable)
	case rr := <-res:
		msg := strings.TrimSpace(string(rr.b))
		if msg == "ok" {
			c := &Client{Socket: filepath.Join(o.Dir, SocketName)}
			c.SetDirect(true)
			c.cinit.Store(true)
			return c, nil
		}
		var w errdefs.Wire
		if json.Unmarshal(rr.b, &w) == nil && w.Message != "" {
			return nil, fmt.Errorf("monitor: %w", w.Err())
		}
		return nil, fmt.Errorf("monitor of pod %s exited before it was ready (see %s): %w",
			o.PodID, filepath.Join(o.Dir, "monitor.log"), errdefs.ErrInternal)
	}
}

// dropped holds the binaries whose page cache dropPageCache dropped.
var dropped sync.Map

// dropPageCache writes back and drops the page cache of exe, once per
// binary and process. A binary written with one large write (the daemon
// unpacks the runtime so) is cached in large folios, and the kernel maps
// a whole folio into a process that reads one byte of it: a monitor reads
// a few KB of the binary's read-only data (the rest is Go it never runs)
// and would be charged 2 MB of it. Read back through page faults, the
// binary is cached in small folios. Pages mapped by running processes are
// left alone by the kernel.
func dropPageCache(exe string) {
	if _, done := dropped.LoadOrStore(exe, true); done {
		return
	}
	f, err := os.Open(exe)
	if err != nil {
		return
	}
	defer f.Close()
	f.Sync() // only clean pages can be dropped
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// cleanEnv passes the environment on without variables meant for us.
func cleanEnv() []string {
	var out []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "_SHIM_") || strings.HasPrefix(e, "LISTEN_") || strings.HasPrefix(e, "NOTIFY_SOCKET=") ||
			strings.HasPrefix(e, "GOMAXPROCS=") || strings.HasPrefix(e, "GOGC=") {
			continue
		}
		out = append(out, e)
	}
	return out
}

// Ready reports the monitor's start-up result on the ready fd, if any.
func Ready(err error) {
	fdStr := os.Getenv(ReadyFdEnv)
	if fdStr == "" {
		return
	}
	os.Unsetenv(ReadyFdEnv)
	var fd uintptr
	fmt.Sscan(fdStr, &fd)
	f := os.NewFile(fd, "ready")
	if f == nil {
		return
	}
	defer f.Close()
	if err != nil {
		f.Write(errdefs.MarshalError(err))
		return
	}
	f.Write([]byte("ok\n"))
}
