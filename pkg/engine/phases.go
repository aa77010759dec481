package engine

import (
	"time"

	"github.com/shim-cri/shim/pkg/monitor"
)

// The phases of the timed jobs (run_pod, create, start), in the order
// they are marked: each lasts from the previous mark (or the job's start)
// to its own. The README's table says the same for readers of /metrics.
const (
	// All three, PhaseLock first (engine.go), then:
	phaseValidate = "validate" // checks, lookups, the name reserved
	phaseRecord   = "record"   // the record written to meta.db

	// run_pod.
	phaseNamespaces = "namespaces"  // pod directory; net, uts, ipc (user) namespaces made and pinned; hostname set
	phaseShm        = "shm_sysctls" // /dev/shm mounted, namespaced sysctls written
	phasePodFiles   = "pod_files"   // hosts, resolv.conf, hostname written and mounted
	phaseNetwork    = "network"     // the network driver's Setup (for the bridge: what its net_* phases leave)
	phaseImage      = "image"       // shared pid, sandbox image only: the sandbox image looked up (or pulled)
	phaseCgroup     = "cgroup"      // shared pid, the monitor's own infra: its plan and cgroup made
	phaseInfra      = "infra"       // shared pid, the monitor's own infra: the monitor's infra call, as the daemon sees it
	phaseMonitor    = "monitor"     // the wait for the pod's monitor, started in the background when the pod directory was made

	// create (and run_pod's sandbox-image infra, shared pid only).
	phaseSnapshot     = "snapshot"      // writable snapshot prepared and mounted as the rootfs
	phaseSpec         = "spec"          // image volumes, OCI spec generated, config.json written
	phaseMonitorSpawn = "monitor_spawn" // the pod's monitor started (it was gone: a daemon restart)
	phaseMonitorReuse = "monitor_reuse" // the pod's monitor found running (run_pod's infra: the wait for its start)
	phaseCreate       = "create"        // run_pod's sandbox-image infra: the monitor's create, as the daemon sees it
	phaseStart        = "start"         // run_pod's sandbox-image infra: the monitor's start, as the daemon sees it

	// create and start: the monitor's create or start, split by what the
	// monitor and its helper report (markMonitorCall). A direct create
	// (no helper: the monitor starts the init from libct's template) has
	// libct_prepare before and libct_commit after, and no helper phase.
	phaseLibctPrepare = "libct_prepare" // direct create: libct's checks, state dir, cgroup and create template, in the daemon
	phaseHelper       = "helper"        // the helper around its operation: fork, exec and Go runtime start, its result
	phaseLibctCreate  = "libct_create"  // the create in the helper (libct, or the OCI runtime binary), or the monitor's direct create
	phaseLibctCommit  = "libct_commit"  // direct create: the init's pid and exec template written to libct's state
	phaseLibctStart   = "libct_start"   // the start in the helper, or the monitor's: the init released to exec the process
	phaseMonitorCall  = "monitor_call"  // the rest of the call: the request, the monitor's own work, the reply

	// start.
	phaseRefresh = "refresh" // the exit record checked (the process may be gone already)
)

// markMonitorCall ends the phases of a monitor create or start (op: its
// phase in the helper). A monitor that does not report the helper's
// times (one started by an older daemon) gives monitor_call alone. The
// two clocks are read in two processes: the operation is at most the
// helper's time.
func markMonitorCall(j *Job, resp *monitor.Response, op string) {
	if resp != nil && resp.HelperNs > 0 && resp.OpNs >= 0 {
		opNs := min(resp.OpNs, resp.HelperNs)
		if resp.HelperNs > opNs {
			j.Add(phaseHelper, time.Duration(resp.HelperNs-opNs))
		}
		j.Add(op, time.Duration(opNs))
	}
	j.Mark(phaseMonitorCall)
}
