package engine

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
	phaseImage      = "image"       // shared pid only: the sandbox image looked up (or pulled)

	// create (and run_pod's infra, shared pid only).
	phaseSnapshot     = "snapshot"      // writable snapshot prepared and mounted as the rootfs
	phaseSpec         = "spec"          // image volumes, OCI spec generated, config.json written
	phaseMonitorSpawn = "monitor_spawn" // the pod's monitor started (its first container)
	phaseMonitorReuse = "monitor_reuse" // the pod's monitor found running
	phaseCreate       = "create"        // monitor create: helper and libct create, as the daemon sees it

	// start.
	phaseStart   = "start"   // monitor start: the init released to exec the process
	phaseRefresh = "refresh" // the exit record checked (the process may be gone already)
)
