package libct

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"golang.org/x/sys/unix"
)

var rlimitNames = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

// checkRlimits validates rlimits against this process's own limits, which
// the init inherits: a hard limit above ours needs CAP_SYS_RESOURCE, which
// this host lacks, so it is reported up front naming the limit.
func checkRlimits(rl []specs.POSIXRlimit) error {
	seen := map[string]bool{}
	for _, r := range rl {
		res, ok := rlimitNames[r.Type]
		if !ok {
			return fmt.Errorf("unknown rlimit %q: %w", r.Type, errdefs.ErrInvalidArgument)
		}
		if seen[r.Type] {
			return fmt.Errorf("rlimit %s given twice: %w", r.Type, errdefs.ErrInvalidArgument)
		}
		seen[r.Type] = true
		if r.Soft > r.Hard {
			return fmt.Errorf("rlimit %s: soft limit %d above hard limit %d: %w", r.Type, r.Soft, r.Hard, errdefs.ErrInvalidArgument)
		}
		var cur unix.Rlimit
		if err := unix.Getrlimit(res, &cur); err != nil {
			continue
		}
		if r.Hard > cur.Max && !hasCap(unix.CAP_SYS_RESOURCE) {
			return fmt.Errorf("rlimit %s: hard limit %d is above the current hard limit %d and this process lacks CAP_SYS_RESOURCE: %w",
				r.Type, r.Hard, cur.Max, errdefs.ErrPermissionDenied)
		}
	}
	return nil
}

// rlimitOp is one setrlimit to make.
type rlimitOp struct {
	name string
	res  int
	lim  unix.Rlimit
}

// planRlimits splits the rlimits into those set early, while the init
// still has its capabilities, and those set just before execve: limits on
// the address space and data segment would starve the Go runtime of the
// init, so they are only raised early and lowered last (lowering needs
// no privilege).
func planRlimits(rl []specs.POSIXRlimit) (early, late []rlimitOp, err error) {
	for _, r := range rl {
		res, ok := rlimitNames[r.Type]
		if !ok {
			return nil, nil, fmt.Errorf("unknown rlimit %q: %w", r.Type, errdefs.ErrInvalidArgument)
		}
		op := rlimitOp{name: r.Type, res: res, lim: unix.Rlimit{Cur: r.Soft, Max: r.Hard}}
		if res != unix.RLIMIT_AS && res != unix.RLIMIT_DATA {
			early = append(early, op)
			continue
		}
		var cur unix.Rlimit
		if err := unix.Getrlimit(res, &cur); err == nil {
			raise := op
			raise.lim.Cur, raise.lim.Max = max(cur.Cur, op.lim.Cur), max(cur.Max, op.lim.Max)
			if raise.lim.Cur > raise.lim.Max {
				raise.lim.Cur = raise.lim.Max
			}
			early = append(early, raise)
		}
		late = append(late, op)
	}
	return early, late, nil
}

func setRlimits(ops []rlimitOp) error {
	for _, op := range ops {
		if err := unix.Prlimit(0, op.res, &op.lim, nil); err != nil {
			return fmt.Errorf("set rlimit %s (soft %d, hard %d): %w: %w", op.name, op.lim.Cur, op.lim.Max, err,
				errdefs.OSClass(err, errdefs.ErrInvalidArgument))
		}
	}
	return nil
}

// setRlimitsRaw sets rlimits without allocating.
func setRlimitsRaw(ops []rlimitOp) unix.Errno {
	for i := range ops {
		if _, _, e := unix.RawSyscall6(unix.SYS_PRLIMIT64, 0, uintptr(ops[i].res), uintptr(unsafePointer(&ops[i].lim)), 0, 0, 0); e != 0 {
			return e
		}
	}
	return 0
}

func hasCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<uint(c%32)) != 0
}

var oomWarnOnce sync.Once

// writeOOMScoreAdj sets pid's oom_score_adj. Lowering it needs
// CAP_SYS_RESOURCE; without it the value is clamped to the current one
// and a warning is logged once per process.
func writeOOMScoreAdj(pid string, v int) error {
	if v < -1000 || v > 1000 {
		return fmt.Errorf("oomScoreAdj %d out of range [-1000, 1000]: %w", v, errdefs.ErrInvalidArgument)
	}
	path := "/proc/" + pid + "/oom_score_adj"
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read oom_score_adj: %w", err)
	}
	cur, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if cur == v {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(v)), 0); err != nil {
		if v < cur {
			oomWarnOnce.Do(func() {
				log.L.WithField("requested", v).WithField("current", cur).
					Warn("oomScoreAdj below the current value needs CAP_SYS_RESOURCE; clamped to the current value")
			})
			return nil
		}
		return fmt.Errorf("write oom_score_adj %d: %w", v, err)
	}
	return nil
}

// namespacedSysctl reports whether a sysctl is isolated by one of the
// container's namespaces (the same list runc accepts).
func namespacedSysctl(key string, newNS map[specs.LinuxNamespaceType]bool) error {
	ipc := map[string]bool{
		"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true, "kernel.sem": true,
		"kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true, "kernel.shm_rmid_forced": true,
	}
	switch {
	case ipc[key] || strings.HasPrefix(key, "fs.mqueue."):
		if newNS[specs.IPCNamespace] {
			return nil
		}
		return fmt.Errorf("sysctl %q needs a new IPC namespace: %w", key, errdefs.ErrInvalidArgument)
	case strings.HasPrefix(key, "net."):
		if newNS[specs.NetworkNamespace] {
			return nil
		}
		return fmt.Errorf("sysctl %q needs a new network namespace: %w", key, errdefs.ErrInvalidArgument)
	case key == "kernel.hostname" || key == "kernel.domainname":
		return fmt.Errorf("sysctl %q: set the hostname and domainname in the spec instead: %w", key, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("sysctl %q is not namespaced: refusing to change it for the host: %w", key, errdefs.ErrInvalidArgument)
}

// setupNamespaceSettings sets hostname, domainname and sysctls in the new
// namespaces (create only).
func setupNamespaceSettings(cfg *initConfig) error {
	spec := cfg.Spec
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if spec.Domainname != "" {
		if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
			return fmt.Errorf("setdomainname: %w", err)
		}
	}
	if spec.Linux != nil && len(spec.Linux.Sysctl) > 0 {
		procfd, err := openProcChecked("/proc/sys")
		if err != nil {
			return err
		}
		defer unix.Close(procfd)
		for k, v := range spec.Linux.Sysctl {
			rel := strings.ReplaceAll(k, ".", "/")
			if strings.Contains(rel, "..") {
				return fmt.Errorf("sysctl %q: %w", k, errdefs.ErrInvalidArgument)
			}
			fd, err := unix.Openat2(procfd, rel, &unix.OpenHow{
				Flags:   unix.O_WRONLY | unix.O_CLOEXEC | unix.O_TRUNC,
				Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
			})
			if err != nil {
				return fmt.Errorf("sysctl %q: %w: %w", k, err, errdefs.ErrInvalidArgument)
			}
			_, err = unix.Write(fd, []byte(v))
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("sysctl %q=%q: %w: %w", k, v, err, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// openProcChecked opens a directory under /proc and checks it really is on
// procfs, so a fake /proc in the image can never receive our writes.
func openProcChecked(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.PROC_SUPER_MAGIC {
		unix.Close(fd)
		return -1, fmt.Errorf("%s is not on procfs: %w", path, errdefs.ErrPermissionDenied)
	}
	return fd, nil
}
