package libct

import (
	"os"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Status is the OCI status of a container.
type Status string

// OCI statuses.
const (
	StatusCreating Status = "creating"
	StatusCreated  Status = "created"
	StatusRunning  Status = "running"
	StatusPaused   Status = "paused"
	StatusStopped  Status = "stopped"
)

// State is what State() reports: the OCI state plus what libct needs to find
// the container again.
type State struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      Status            `json:"status"`
	Pid         int               `json:"pid"`
	PidStart    uint64            `json:"pidStartTime"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Created     time.Time         `json:"created"`
	CgroupPath  string            `json:"cgroupPath"`
	Owner       string            `json:"owner"`
}

// CreateOpts are the caller's choices for Create that are not in the spec.
type CreateOpts struct {
	// Stdin, Stdout, Stderr become fds 0, 1, 2 of the init (nil: /dev/null).
	// Ignored when the spec asks for a terminal.
	Stdin, Stdout, Stderr *os.File
	// ConsoleSocket, when the spec asks for a terminal, receives the pty
	// master (SCM_RIGHTS, runc's protocol). When nil, the master is returned
	// in Container.Console instead.
	ConsoleSocket *os.File
	// ExtraFiles are passed to the container process as fds 3, 4, ...
	// (runc's --preserve-fds).
	ExtraFiles []*os.File
	// NoPivot uses MS_MOVE and chroot instead of pivot_root (initramfs).
	NoPivot bool
	// NoNewKeyring keeps the caller's session keyring.
	NoNewKeyring bool
	// OnPid, if set, is called with the init's pid once it is known,
	// while the init sets the container up: the caller's work to do
	// beside it (it must not block).
	OnPid func(pid int)
}

// ExecOpts are the caller's choices for Exec.
type ExecOpts struct {
	Stdin, Stdout, Stderr *os.File
	ConsoleSocket         *os.File
	ExtraFiles            []*os.File
}

// Process is a process started by Exec. The caller is its parent.
type Process struct {
	Pid int
	// Console is the pty master when a terminal was asked for without a
	// console socket.
	Console *os.File
	waited  bool
}

// Stats are resource usage figures from the container's cgroup.
type Stats struct {
	CPU struct {
		UsageNanos  uint64   `json:"total"`
		UserNanos   uint64   `json:"user"`
		KernelNanos uint64   `json:"kernel"`
		PerCPU      []uint64 `json:"percpu,omitempty"`
		Periods     uint64   `json:"periods"`
		Throttled   uint64   `json:"throttledPeriods"`
		ThrottledNs uint64   `json:"throttledTime"`
	} `json:"cpu"`
	Memory struct {
		Usage     uint64            `json:"usage"`
		Limit     uint64            `json:"limit"`
		MaxUsage  uint64            `json:"max"`
		Failcnt   uint64            `json:"failcnt"`
		SwapUsage uint64            `json:"swapUsage"`
		Cache     uint64            `json:"cache"`
		OOMKills  uint64            `json:"oomKills"`
		Raw       map[string]uint64 `json:"raw,omitempty"`
	} `json:"memory"`
	Pids struct {
		Current uint64 `json:"current"`
		Limit   uint64 `json:"limit"`
	} `json:"pids"`
}

// ExitStatus is how a waited-for process ended.
type ExitStatus struct {
	Code     int // exit code, or 128+signal
	Signaled bool
	Signal   int
}

// specOf is used by tests and callers who want a copy of the stored spec.
type stored struct {
	State
	Spec          *specs.Spec `json:"spec"`
	NoPivot       bool        `json:"noPivot,omitempty"`
	CgroupVersion int         `json:"cgroupVersion"`
	Namespaces    []string    `json:"namespaces,omitempty"` // types the container owns
	Stopped       bool        `json:"stopped,omitempty"`
	InitExe       string      `json:"initExe,omitempty"` // the init's /proc/<pid>/exe before it execs
}
