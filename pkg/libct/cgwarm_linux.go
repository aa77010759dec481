//go:build !shim_init

package libct

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/cgroups"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// AttachWarmer hides the wait of a container's first cgroup join.
//
// Moving a process into a cgroup (a write to cgroup.procs, v1 or v2)
// takes the kernel's cgroup_threadgroup_rwsem for writing, and the first
// writer after a quiet spell waits for an RCU grace period before it gets
// it (rcu_sync_enter); writers that come within a grace period of the
// last one do not wait. On the VM of docs/benchmarks.md ("The cgroup
// join's wait") that was 9 ms of a container create's 19. Warm has the
// daemon write its own pid into the cgroup it is in (which moves
// nothing) in the background when a pod or a container create starts, so
// the grace period passes while the daemon prepares the snapshot, the
// spec and the plan, and the monitor's join finds the lock warm. The
// writer holds the kernel's cgroup_mutex while it waits, so every cgroup
// made or joined on the host meanwhile (the create's own, kubelet's)
// waits for the rest of that grace period, as it would behind the
// container's own join; a warm-up no join follows within a grace period
// costs one such wait more. If the kernel does not work this way, a
// warm-up is one no-op write.
type AttachWarmer struct {
	version int
	dir     string // the hierarchy's mount point
	key     string // the hierarchy's key in /proc/self/cgroup
	pid     []byte
	busy    atomic.Bool
	failed  atomic.Bool
	wg      sync.WaitGroup // the warm-up running, for tests
}

// NewAttachWarmer returns the warmer of this process's own cgroup (on v2
// its cgroup, on v1 and hybrid hosts, whose containers join v1
// hierarchies only, its cgroup in the devices hierarchy, which libct
// requires) after one warm-up, so that a host where it cannot work (a
// read-only or foreign cgroupfs, a threaded v2 cgroup) says so once, at
// start, and gets none.
func NewAttachWarmer() (*AttachWarmer, error) {
	w := &AttachWarmer{version: cgroupVersion(), pid: []byte(strconv.Itoa(os.Getpid()))}
	if w.version == 2 {
		w.dir = cgroup2Root
	} else {
		mounts, err := v1Mounts()
		if err != nil {
			return nil, err
		}
		w.dir, w.key = mounts["devices"], "devices"
	}
	if err := w.warm(); err != nil {
		return nil, err
	}
	return w, nil
}

// procs is the cgroup.procs file of the cgroup this process is in now,
// read each time: whoever moved the daemon is not undone.
func (w *AttachWarmer) procs() (string, error) {
	own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	rel, ok := own[w.key]
	if !ok {
		return "", fmt.Errorf("this process is in no %q cgroup: %w", w.key, errdefs.ErrNotFound)
	}
	dir := filepath.Join(w.dir, rel)
	if w.version == 2 {
		// In a threaded cgroup, writing the pid would gather the threads.
		if t, err := os.ReadFile(filepath.Join(dir, "cgroup.type")); err == nil && strings.TrimSpace(string(t)) != "domain" {
			return "", fmt.Errorf("cgroup %s is %s, not a domain: %w", dir, strings.TrimSpace(string(t)), errdefs.ErrNotImplemented)
		}
	}
	return filepath.Join(dir, "cgroup.procs"), nil
}

// warm writes this process's pid into its own cgroup.
func (w *AttachWarmer) warm() error {
	procs, err := w.procs()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(procs, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(w.pid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Warm starts a warm-up unless one runs. Worked at start, a warm-up
// that fails (the cgroupfs changed under the daemon) is logged once;
// the next ones are tried all the same (one failed write each).
func (w *AttachWarmer) Warm() {
	if w == nil || !w.busy.CompareAndSwap(false, true) {
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer w.busy.Store(false)
		if err := w.warm(); err != nil && !w.failed.Swap(true) {
			log.L.WithError(err).Warn("cgroup join warm-up failed: a container's first join may wait for the kernel's RCU grace period")
		}
	}()
}

// wait waits for the warm-up running, if any.
func (w *AttachWarmer) wait() { w.wg.Wait() }
