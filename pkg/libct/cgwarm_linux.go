//go:build !shim_init

package libct

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/cgroups"

	"github.com/shim-cri/shim/pkg/log"
)

// AttachWarmer hides the wait of a container's first cgroup join.
//
// Moving a process into a cgroup (a write to cgroup.procs, v1 or v2)
// takes the kernel's cgroup_threadgroup_rwsem for writing, and the first
// writer after a quiet spell waits for an RCU grace period before it gets
// it (rcu_sync_enter); writers that come within a grace period of the
// last one do not wait. On this project's VMs the grace period is 3-9 ms
// of a container create's 13-20 (docs/benchmarks.md, "Where a pod start
// goes"). Warm has the daemon write its own pid into the cgroup it is
// already in (which moves nothing) in the background when a pod or a
// container create starts, so the grace period passes while the daemon
// prepares the snapshot, the spec and the plan, and the monitor's join
// finds the lock warm. If the kernel does not work this way, a warm-up
// is one no-op write.
type AttachWarmer struct {
	procs  string // cgroup.procs of the daemon's own cgroup
	pid    []byte
	busy   atomic.Bool
	warned atomic.Bool
	wg     sync.WaitGroup // the warm-up running, for tests
}

// NewAttachWarmer returns the warmer of this process's own cgroup: on v2
// its cgroup, on v1 (and hybrid hosts, whose containers join v1
// hierarchies only) its cgroup in the devices hierarchy, which libct
// requires.
func NewAttachWarmer() (*AttachWarmer, error) {
	own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var dir string
	if cgroupVersion() == 2 {
		dir = filepath.Join(cgroup2Root, own[""])
	} else {
		mounts, err := v1Mounts()
		if err != nil {
			return nil, err
		}
		if mounts["devices"] == "" || own["devices"] == "" {
			return nil, fmt.Errorf("no devices cgroup for this process")
		}
		dir = filepath.Join(mounts["devices"], own["devices"])
	}
	return newAttachWarmer(filepath.Join(dir, "cgroup.procs")), nil
}

func newAttachWarmer(procs string) *AttachWarmer {
	return &AttachWarmer{procs: procs, pid: []byte(strconv.Itoa(os.Getpid()))}
}

// Warm starts a warm-up unless one runs. A failed one is logged once;
// the next ones are tried all the same (they cost one failed write).
func (w *AttachWarmer) Warm(ctx context.Context) {
	if w == nil || !w.busy.CompareAndSwap(false, true) {
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer w.busy.Store(false)
		f, err := os.OpenFile(w.procs, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.Write(w.pid)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil && !w.warned.Swap(true) {
			log.G(ctx).WithError(err).Warnf("cgroup join warm-up (%s): a container's first join may wait for the kernel's RCU grace period", w.procs)
		}
	}()
}

// wait waits for the warm-up running, if any.
func (w *AttachWarmer) wait() { w.wg.Wait() }
