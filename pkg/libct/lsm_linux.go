package libct

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// AppArmor and SELinux. A spec that asks for a profile or a label is either
// applied or refused: the container process gets the AppArmor profile and
// the SELinux label through the kernel's "exec" attribute (in force from
// its execve), mounts libct makes get the SELinux mount label, and a host
// that cannot apply them makes Create and Exec fail with
// ErrFailedPrecondition.

// lsmHost is where the host's security modules are read and written:
// sysfs (with securityfs and selinuxfs below it) and procfs. Tests point
// it at a fake tree.
type lsmHost struct {
	sys  string
	proc string
}

var hostLSM = lsmHost{sys: "/sys", proc: "/proc"}

// unconfinedProfile is AppArmor's name for no confinement.
const unconfinedProfile = "unconfined"

// LSMSupport is what the host offers containers.
type LSMSupport struct {
	AppArmor bool `json:"apparmor"`
	SELinux  bool `json:"selinux"`
}

// HostLSM reports whether AppArmor and SELinux are enabled on this host.
func HostLSM() LSMSupport {
	return LSMSupport{AppArmor: hostLSM.appArmorEnabled(), SELinux: hostLSM.selinuxEnabled()}
}

// AppArmorProfileLoaded reports whether an AppArmor profile of that name
// is loaded on this host.
func AppArmorProfileLoaded(name string) bool {
	ok, _ := hostLSM.appArmorLoaded(name)
	return ok
}

func (h lsmHost) appArmorEnabled() bool {
	b, err := os.ReadFile(filepath.Join(h.sys, "module/apparmor/parameters/enabled"))
	if err != nil || !strings.HasPrefix(string(b), "Y") {
		return false
	}
	_, err = os.Stat(filepath.Join(h.sys, "kernel/security/apparmor"))
	return err == nil
}

// appArmorLoaded looks name up in securityfs's list of loaded profiles
// ("name (mode)" per line).
func (h lsmHost) appArmorLoaded(name string) (bool, error) {
	f, err := os.Open(filepath.Join(h.sys, "kernel/security/apparmor/profiles"))
	if err != nil {
		return false, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if i := strings.LastIndex(line, " ("); i >= 0 {
			line = line[:i]
		}
		if line == name {
			return true, nil
		}
	}
	return false, s.Err()
}

func (h lsmHost) selinuxEnabled() bool {
	_, err := os.Stat(filepath.Join(h.sys, "fs/selinux/enforce"))
	return err == nil
}

// validateProcessLSM refuses a process whose profile or label the host
// cannot apply.
func (h lsmHost) validateProcessLSM(p *specs.Process) error {
	if prof := p.ApparmorProfile; prof != "" && prof != unconfinedProfile {
		if strings.ContainsAny(prof, "\x00\n") {
			return fmt.Errorf("process.apparmorProfile %q: %w", prof, errdefs.ErrInvalidArgument)
		}
		if !h.appArmorEnabled() {
			return fmt.Errorf("process.apparmorProfile %q: AppArmor is not enabled on this host: %w", prof, errdefs.ErrFailedPrecondition)
		}
		if ok, err := h.appArmorLoaded(prof); !ok {
			if err != nil {
				return fmt.Errorf("process.apparmorProfile %q: reading the loaded profiles: %w: %w", prof, err, errdefs.ErrFailedPrecondition)
			}
			return fmt.Errorf("process.apparmorProfile %q: the profile is not loaded on this host: %w", prof, errdefs.ErrFailedPrecondition)
		}
	}
	if l := p.SelinuxLabel; l != "" {
		if strings.ContainsAny(l, "\x00\n") {
			return fmt.Errorf("process.selinuxLabel %q: %w", l, errdefs.ErrInvalidArgument)
		}
		if !h.selinuxEnabled() {
			return fmt.Errorf("process.selinuxLabel %q: SELinux is not enabled on this host: %w", l, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// validateMountLabel refuses a mount label on a host without SELinux.
func (h lsmHost) validateMountLabel(l string) error {
	if l == "" {
		return nil
	}
	if strings.ContainsAny(l, "\x00\n\"") {
		return fmt.Errorf("linux.mountLabel %q: %w", l, errdefs.ErrInvalidArgument)
	}
	if !h.selinuxEnabled() {
		return fmt.Errorf("linux.mountLabel %q: SELinux is not enabled on this host: %w", l, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// applyExecLSM sets what the calling thread's next execve confines the
// process with: the AppArmor profile (attr/apparmor/exec, or attr/exec
// on kernels without per-module attributes) and the SELinux label
// (attr/exec). The thread must be locked (Init is) and must be the one
// that execs.
func (h lsmHost) applyExecLSM(p *specs.Process) error {
	if prof := p.ApparmorProfile; prof != "" && prof != unconfinedProfile {
		err := h.writeAttr("apparmor/exec", "exec "+prof)
		if errors.Is(err, unix.ENOENT) {
			err = h.writeAttr("exec", "exec "+prof)
		}
		if err != nil {
			return fmt.Errorf("applying AppArmor profile %q: %w: %w", prof, err, errdefs.ErrFailedPrecondition)
		}
	}
	if l := p.SelinuxLabel; l != "" {
		if err := h.writeAttr("exec", l); err != nil {
			return fmt.Errorf("applying SELinux label %q: %w: %w", l, err, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

func (h lsmHost) writeAttr(name, value string) error {
	f, err := os.OpenFile(filepath.Join(h.proc, "thread-self/attr", name), os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write([]byte(value))
	return err
}

// mountLabelData adds the SELinux context of label to the data of a mount
// of type typ, for the filesystems that take one (not proc, sysfs, cgroup
// or bind mounts, which keep the labels they have).
func mountLabelData(typ, data, label string) string {
	if label == "" {
		return data
	}
	switch typ {
	case "", "bind", "proc", "sysfs", "cgroup", "cgroup2", "mqueue", "securityfs", "debugfs", "tracefs", "fusectl", "configfs":
		return data
	}
	opt := `context="` + label + `"`
	if data == "" {
		return opt
	}
	return data + "," + opt
}
