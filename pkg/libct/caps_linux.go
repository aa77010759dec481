package libct

import (
	"context"
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

var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// CapabilityNames lists the capabilities libct knows, in number order.
func CapabilityNames() []string { return append([]string(nil), capNames...) }

var lastCap = sync.OnceValue(func() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return len(capNames) - 1
})

// capSet is a 64-bit capability mask.
type capSet uint64

// parseCaps converts names to a mask. Capabilities unknown to this kernel
// are ignored (as runc does, with a warning); unknown names are an error.
func parseCaps(names []string) (capSet, error) {
	var s capSet
	for _, n := range names {
		i := capIndex(n)
		if i < 0 {
			return 0, fmt.Errorf("unknown capability %q: %w", n, errdefs.ErrInvalidArgument)
		}
		if i > lastCap() {
			continue
		}
		s |= 1 << uint(i)
	}
	return s, nil
}

func capIndex(name string) int {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	for i, c := range capNames {
		if c == n {
			return i
		}
	}
	return -1
}

type procCaps struct {
	bounding, effective, permitted, inheritable, ambient capSet
}

func parseProcCaps(c *specs.LinuxCapabilities) (procCaps, error) {
	var pc procCaps
	if c == nil {
		return pc, nil
	}
	var err error
	for _, x := range []struct {
		dst   *capSet
		names []string
	}{
		{&pc.bounding, c.Bounding}, {&pc.effective, c.Effective}, {&pc.permitted, c.Permitted},
		{&pc.inheritable, c.Inheritable}, {&pc.ambient, c.Ambient},
	} {
		if *x.dst, err = parseCaps(x.names); err != nil {
			return pc, err
		}
	}
	return pc, nil
}

// applyBounding drops every capability not in the bounding set from this
// thread's bounding set.
func applyBounding(bounding capSet) error {
	for i := 0; i <= lastCap(); i++ {
		if bounding&(1<<uint(i)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(i), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop bounding capability %s: %w", capNames[i], err)
		}
	}
	return nil
}

// applyCaps sets this thread's effective, permitted and inheritable sets
// and raises the ambient ones.
func applyCaps(pc procCaps) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	data[0].Effective, data[1].Effective = uint32(pc.effective), uint32(pc.effective>>32)
	data[0].Permitted, data[1].Permitted = uint32(pc.permitted), uint32(pc.permitted>>32)
	data[0].Inheritable, data[1].Inheritable = uint32(pc.inheritable), uint32(pc.inheritable>>32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for i := 0; i <= lastCap(); i++ {
		if pc.ambient&(1<<uint(i)) == 0 {
			continue
		}
		// Raising an ambient cap needs it in permitted and inheritable;
		// runc ignores the failure too.
		_ = unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(i), 0, 0)
	}
	return nil
}

// finalizeProcess switches to the process's user and capability sets. It
// runs on the locked init thread; credentials are changed with per-thread
// raw syscalls and the execve follows on the same thread.
func finalizeProcess(cfg *initConfig) error {
	p := cfg.Process
	pc, err := parseProcCaps(p.Capabilities)
	if err != nil {
		return err
	}
	// Capabilities the runtime itself lacks (CAP_SYS_RESOURCE on some
	// hosts) cannot be granted; the parent warned about them.
	held := heldCaps()
	pc.effective &= held
	pc.permitted &= held
	pc.inheritable &= held
	pc.ambient &= held
	if err := applyBounding(pc.bounding); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set keepcaps: %w", err)
	}
	if err := setUser(p.User); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("clear keepcaps: %w", err)
	}
	if err := applyCaps(pc); err != nil {
		return err
	}
	if p.Cwd != "" {
		if err := enterCwd(p.Cwd); err != nil {
			return err
		}
	}
	unix.Umask(int(umaskOf(p.User)))
	return nil
}

func umaskOf(u specs.User) uint32 {
	if u.Umask != nil {
		return *u.Umask
	}
	return 0o022
}

func setUser(u specs.User) error {
	gids := make([]uint32, 0, len(u.AdditionalGids))
	gids = append(gids, u.AdditionalGids...)
	// setgroups(2) is refused in a user namespace whose setgroups file
	// says deny; only call it when there is something to set or clear.
	var gp uintptr
	if len(gids) > 0 {
		gp = uintptr(unsafePointer(&gids[0]))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), gp, 0); e != 0 && !(e == unix.EPERM && len(gids) == 0) {
		return fmt.Errorf("setgroups %v: %w: %w", gids, e, errdefs.OSClass(e, errdefs.ErrInternal))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("setgid %d%s: %w: %w", u.GID, unmappedHint(e), e, errdefs.OSClass(e, errdefs.ErrInternal))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("setuid %d%s: %w: %w", u.UID, unmappedHint(e), e, errdefs.OSClass(e, errdefs.ErrInternal))
	}
	return nil
}

// unmappedHint explains the EINVAL of setuid/setgid: an id the user
// namespace does not map.
func unmappedHint(e unix.Errno) string {
	if e == unix.EINVAL {
		return " (is the id mapped?)"
	}
	return ""
}

// enterCwd changes to cwd and checks the result is inside the root: a cwd
// reached through a leaked host fd would show as "(unreachable)" (runc
// CVE-2024-21626).
func enterCwd(cwd string) error {
	if err := unix.Chdir(cwd); err != nil {
		return fmt.Errorf("chdir to cwd %q: %w: %w", cwd, err, errdefs.ErrInvalidArgument)
	}
	wd, err := unix.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") {
		return fmt.Errorf("cwd %q is outside the container root: %w", cwd, errdefs.ErrPermissionDenied)
	}
	return nil
}

// heldCaps is this thread's permitted set.
func heldCaps() capSet {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return ^capSet(0)
	}
	return capSet(data[0].Permitted) | capSet(data[1].Permitted)<<32
}

var capWarnOnce sync.Once

// warnMissingCaps logs once per process when a spec asks for capabilities
// this process does not hold (they are left out).
func warnMissingCaps(ctx context.Context, c *specs.LinuxCapabilities) {
	if c == nil {
		return
	}
	pc, err := parseProcCaps(c)
	if err != nil {
		return
	}
	missing := (pc.permitted | pc.effective | pc.ambient | pc.inheritable) &^ heldCaps()
	if missing == 0 {
		return
	}
	var names []string
	for i := 0; i <= lastCap(); i++ {
		if missing&(1<<uint(i)) != 0 {
			names = append(names, capNames[i])
		}
	}
	capWarnOnce.Do(func() {
		log.G(ctx).WithField("capabilities", strings.Join(names, ",")).
			Warn("the runtime does not hold these capabilities; they are left out of the container")
	})
}
