package libct

import (
	"context"
	"fmt"
	"strconv"

	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

// standardInit is the Go init of a new container (create, run): it sets
// up the root filesystem and the new namespaces, reports ready, waits on
// the exec fifo for Start and execs the container process.
type standardInit struct {
	cfg    *initConfig
	fifoFd int // the exec fifo (O_PATH), -1: none
	// procFdDir is the host's /proc/self/fd, held across the chroot of a
	// container without a mount namespace to reopen the fifo through; -1:
	// not needed.
	procFdDir int
}

func (l *standardInit) run() error {
	cfg := l.cfg
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	if !cfg.NoNewKeyring {
		// A fresh session keyring, so containers do not share the host's.
		name := "_ses." + cfg.ID
		if len(name) > 200 {
			name = name[:200]
		}
		_, _ = unix.KeyctlJoinSessionKeyring(name)
	}
	if err := l.setupRoot(); err != nil {
		return err
	}
	if cfg.Process.Terminal {
		if err := setupConsole(cfg.conn); err != nil {
			return err
		}
	}
	if err := setupNamespaceSettings(cfg); err != nil {
		return err
	}
	if cfg.NewMountNS {
		if err := finalizeRootfs(cfg); err != nil {
			return err
		}
	}
	seccompSpec := cfg.Seccomp
	if cfg.Spec.Linux != nil {
		seccompSpec = cfg.Spec.Linux.Seccomp
	}
	plan, err := planExec(cfg, seccompSpec)
	if err != nil {
		return err
	}
	if err := reportReady(cfg.conn); err != nil {
		return err
	}
	if err := l.waitStart(); err != nil {
		return err
	}
	if h := cfg.Spec.Hooks; h != nil && len(h.StartContainer) > 0 {
		if err := RunHooks(context.Background(), h.StartContainer, cfg.hookState(StatusCreated), false); err != nil {
			return err
		}
	}
	return plan.exec()
}

// setupRoot mounts the root filesystem in the new mount namespace, or,
// without one, only chroots into it (no mounts on the host).
func (l *standardInit) setupRoot() error {
	cfg := l.cfg
	if cfg.NewMountNS {
		return setupRootfs(cfg)
	}
	if cfg.Rootfs == "" {
		return nil
	}
	// The exec fifo is then reopened through the host's /proc, held open
	// from here.
	if l.fifoFd >= 0 {
		fd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /proc/self/fd: %w", err)
		}
		l.procFdDir = fd
	}
	if err := unix.Chroot(cfg.Rootfs); err != nil {
		return fmt.Errorf("chroot %s: %w", cfg.Rootfs, err)
	}
	unix.Chdir("/")
	return nil
}

// waitStart writes the exec fifo, which blocks until Start opens it for
// reading.
func (l *standardInit) waitStart() error {
	if l.fifoFd < 0 {
		return fmt.Errorf("no exec fifo: %w", errdefs.ErrInternal)
	}
	var w int
	var err error
	if l.procFdDir >= 0 {
		w, err = unix.Openat(l.procFdDir, strconv.Itoa(l.fifoFd), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		unix.Close(l.procFdDir)
	} else {
		w, err = unix.Open("/proc/self/fd/"+strconv.Itoa(l.fifoFd), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("open exec fifo: %w", err)
	}
	if _, err := unix.Write(w, []byte{'0'}); err != nil {
		return fmt.Errorf("write exec fifo: %w", err)
	}
	unix.Close(w)
	unix.Close(l.fifoFd)
	return nil
}

// setnsInit is the Go init of a process exec'd into a running container:
// the C stage joined its namespaces; it sets up the process and execs it.
type setnsInit struct {
	cfg *initConfig
}

func (l *setnsInit) run() error {
	cfg := l.cfg
	p := cfg.Process
	if err := checkExecProcess(p); err != nil {
		return err
	}
	if p.Terminal {
		// Its own session, so the pty can become its controlling
		// terminal.
		unix.Setsid()
	}
	// No chroot, also for a no-pivot container: joining its mount
	// namespace put this process at the top of the mounts stacked on the
	// namespace's root, the rootfs the init moved there (TestNoPivotExec).
	if p.Terminal {
		if err := setupConsole(cfg.conn); err != nil {
			return err
		}
	}
	if p.OOMScoreAdj != nil {
		writeOOMScoreAdj("self", *p.OOMScoreAdj)
	}
	plan, err := planExec(cfg, cfg.Seccomp)
	if err != nil {
		return err
	}
	if err := reportReady(cfg.conn); err != nil {
		return err
	}
	return plan.exec()
}
