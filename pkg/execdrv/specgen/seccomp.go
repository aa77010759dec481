package specgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// MaxSeccompProfileSize caps a Localhost seccomp profile.
const MaxSeccompProfileSize = 1 << 20

// Deprecated seccomp_profile_path (and apparmor_profile) values.
const (
	profileRuntimeDefault = "runtime/default"
	profileDockerDefault  = "docker/default"
	profileUnconfined     = "unconfined"
	profileLocalhost      = "localhost/"
)

type seccompChoice int

const (
	seccompNone seccompChoice = iota
	seccompDefault
	seccompLocalhost
)

// seccompRequest decides which profile applies: the SecurityProfile field,
// else the deprecated path string, else RuntimeDefault with SeccompDefault
// and Unconfined without. An empty SecurityProfile is RuntimeDefault (its
// zero profile type); a nil one is unset.
func seccompRequest(sp *runtimeapi.SecurityProfile, legacy string, useDefault bool) (seccompChoice, string, error) {
	if sp != nil {
		switch sp.GetProfileType() {
		case runtimeapi.SecurityProfile_RuntimeDefault:
			return seccompDefault, "", nil
		case runtimeapi.SecurityProfile_Unconfined:
			return seccompNone, "", nil
		case runtimeapi.SecurityProfile_Localhost:
			ref := sp.GetLocalhostRef()
			if !filepath.IsAbs(ref) || hasCtl(ref) {
				return 0, "", inval("seccomp: localhost profile %q must be an absolute path", ref)
			}
			return seccompLocalhost, filepath.Clean(ref), nil
		default:
			return 0, "", inval("seccomp: profile type %d", sp.GetProfileType())
		}
	}
	switch {
	case legacy == "":
		if useDefault {
			return seccompDefault, "", nil
		}
		return seccompNone, "", nil
	case legacy == profileRuntimeDefault || legacy == profileDockerDefault:
		return seccompDefault, "", nil
	case legacy == profileUnconfined:
		return seccompNone, "", nil
	case strings.HasPrefix(legacy, profileLocalhost):
		ref := strings.TrimPrefix(legacy, profileLocalhost)
		if !filepath.IsAbs(ref) || hasCtl(ref) {
			return 0, "", inval("seccomp: localhost profile %q must be an absolute path", ref)
		}
		return seccompLocalhost, filepath.Clean(ref), nil
	}
	return 0, "", inval("seccomp profile %q: want runtime/default, unconfined or localhost/<path>", legacy)
}

// seccompProfile returns the seccomp filter of a process whose capabilities
// are already in s (the default profile allows some syscalls only with some
// capabilities). Privileged containers are not filtered.
func seccompProfile(ctx context.Context, sp *runtimeapi.SecurityProfile, legacy string, privileged bool, s *specs.Spec, o Options) (*specs.LinuxSeccomp, error) {
	choice, ref, err := seccompRequest(sp, legacy, o.SeccompDefault)
	if err != nil {
		return nil, err
	}
	if privileged {
		if choice != seccompNone {
			log.G(ctx).Debug("seccomp profile ignored: the container is privileged")
		}
		return nil, nil
	}
	switch choice {
	case seccompDefault:
		return DefaultSeccomp(s.Process.Capabilities.Bounding)
	case seccompLocalhost:
		return loadSeccomp(ref, s)
	}
	return nil, nil
}

func loadSeccomp(ref string, s *specs.Spec) (*specs.LinuxSeccomp, error) {
	f, err := os.OpenFile(ref, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("seccomp profile %s does not exist: %w", ref, errdefs.ErrNotFound)
		}
		return nil, inval("seccomp profile %s: %v", ref, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, inval("seccomp profile %s is not a regular file", ref)
	}
	b, err := capread.Read(f, MaxSeccompProfileSize)
	if err != nil {
		return nil, fmt.Errorf("read seccomp profile %s: %w", ref, err)
	}
	p, err := seccomp.LoadProfile(string(b), s)
	if err != nil {
		return nil, inval("seccomp profile %s: %v", ref, err)
	}
	return p, nil
}

// The default profile converted for a set of capabilities, memoized by the
// capabilities its rules look at (a handful of combinations in practice).
var defaultSeccomp struct {
	once     sync.Once
	relevant []string // capabilities named by the profile's includes/excludes
	mu       sync.Mutex
	memo     map[string]*specs.LinuxSeccomp
}

const maxSeccompMemo = 256

// DefaultSeccomp is Docker's default seccomp profile converted for a
// process with the given bounding capabilities on this architecture and
// kernel (rules that need a capability, like mount with CAP_SYS_ADMIN, are
// included only with it). The result is the caller's to change.
func DefaultSeccomp(bounding []string) (*specs.LinuxSeccomp, error) {
	d := &defaultSeccomp
	d.once.Do(func() {
		set := map[string]bool{}
		for _, sc := range seccomp.DefaultProfile().Syscalls {
			for _, f := range []*seccomp.Filter{sc.Includes, sc.Excludes} {
				if f != nil {
					for _, c := range f.Caps {
						set[c] = true
					}
				}
			}
		}
		for c := range set {
			d.relevant = append(d.relevant, c)
		}
		slices.Sort(d.relevant)
		d.memo = map[string]*specs.LinuxSeccomp{}
	})
	var key []string
	for _, c := range d.relevant {
		if slices.Contains(bounding, c) {
			key = append(key, c)
		}
	}
	k := strings.Join(key, ",")
	d.mu.Lock()
	p, ok := d.memo[k]
	d.mu.Unlock()
	if !ok {
		rs := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: key}}}
		var err error
		if p, err = seccomp.GetDefaultProfile(rs); err != nil {
			return nil, fmt.Errorf("convert the default seccomp profile: %w", err)
		}
		d.mu.Lock()
		if len(d.memo) < maxSeccompMemo {
			d.memo[k] = p
		}
		d.mu.Unlock()
	}
	return copySeccomp(p), nil
}

func copySeccomp(p *specs.LinuxSeccomp) *specs.LinuxSeccomp {
	if p == nil {
		return nil
	}
	c := *p
	c.Architectures = slices.Clone(p.Architectures)
	c.Flags = slices.Clone(p.Flags)
	if p.DefaultErrnoRet != nil {
		v := *p.DefaultErrnoRet
		c.DefaultErrnoRet = &v
	}
	c.Syscalls = make([]specs.LinuxSyscall, len(p.Syscalls))
	for i, sc := range p.Syscalls {
		n := sc
		n.Names = slices.Clone(sc.Names)
		n.Args = slices.Clone(sc.Args)
		if sc.ErrnoRet != nil {
			v := *sc.ErrnoRet
			n.ErrnoRet = &v
		}
		c.Syscalls[i] = n
	}
	return &c
}

// apparmorProfile is the AppArmor profile of the process, "" for none.
// A Localhost profile is passed on whatever the host has: the executor
// applies it or refuses the container (FailedPrecondition), never runs it
// unconfined. RuntimeDefault (also no profile at all) is the runtime's
// default profile when the host has one loaded, no confinement otherwise;
// privileged containers get it neither.
func apparmorProfile(sp *runtimeapi.SecurityProfile, legacy string, privileged bool, o Options) (string, error) {
	if sp != nil {
		switch sp.GetProfileType() {
		case runtimeapi.SecurityProfile_Unconfined:
			return "", nil
		case runtimeapi.SecurityProfile_Localhost:
			return localhostAppArmor(sp.GetLocalhostRef())
		case runtimeapi.SecurityProfile_RuntimeDefault:
			if sp.GetLocalhostRef() != "" {
				return "", fmt.Errorf("apparmor: localhost_ref %q set on a RuntimeDefault profile: %w", sp.GetLocalhostRef(), errdefs.ErrInvalidArgument)
			}
		default:
			return "", fmt.Errorf("apparmor: unknown profile type %d: %w", sp.GetProfileType(), errdefs.ErrInvalidArgument)
		}
	} else {
		switch {
		case legacy == profileUnconfined:
			return "", nil
		case strings.HasPrefix(legacy, profileLocalhost):
			return localhostAppArmor(legacy)
		case legacy != "" && legacy != profileRuntimeDefault && legacy != profileDockerDefault:
			return "", fmt.Errorf("apparmor_profile %q: want unconfined, runtime/default or localhost/<name>: %w", legacy, errdefs.ErrInvalidArgument)
		}
	}
	if privileged {
		return "", nil
	}
	return o.AppArmorDefaultProfile, nil
}

func localhostAppArmor(ref string) (string, error) {
	name := strings.TrimPrefix(ref, profileLocalhost)
	if name == "" || strings.ContainsAny(name, "\x00\n") {
		return "", fmt.Errorf("apparmor: localhost profile %q: %w", ref, errdefs.ErrInvalidArgument)
	}
	return name, nil
}

// noSELinuxOnce: the log line about a host without SELinux, once.
var noSELinuxOnce sync.Once

// selinuxLabels are the process and mount labels from the SELinux
// options, "" for none. On a host with SELinux the executor applies them
// (or refuses the container); on a host without, valid options are left
// out of the spec (see Options.SELinux) and that is logged once. The
// mount label is the process label's user and level with the object role
// and the container file type.
func selinuxLabels(ctx context.Context, so *runtimeapi.SELinuxOption, privileged, enabled bool) (process, mount string, err error) {
	if so == nil || (so.GetUser() == "" && so.GetRole() == "" && so.GetType() == "" && so.GetLevel() == "") {
		return "", "", nil
	}
	if privileged {
		return "", "", nil
	}
	for _, v := range []string{so.GetUser(), so.GetRole(), so.GetType(), so.GetLevel()} {
		if strings.ContainsAny(v, "\x00\n\" ") || (v != so.GetLevel() && strings.Contains(v, ":")) {
			return "", "", fmt.Errorf("selinux_options %q: %w", v, errdefs.ErrInvalidArgument)
		}
	}
	if !enabled {
		noSELinuxOnce.Do(func() {
			log.G(ctx).Info("SELinux is not enabled on this host: pods' selinux_options are not applied (as with containerd and CRI-O); Status reports it under \"lsm\"")
		})
		return "", "", nil
	}
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	user, level := def(so.GetUser(), "system_u"), def(so.GetLevel(), "s0")
	process = strings.Join([]string{user, def(so.GetRole(), "system_r"), def(so.GetType(), "container_t"), level}, ":")
	mount = strings.Join([]string{user, "object_r", "container_file_t", level}, ":")
	return process, mount, nil
}

// SandboxSeccompDefault reports whether a pod's sandbox runs under the
// runtime's default seccomp profile or none, that is not under a
// Localhost profile.
func SandboxSeccompDefault(pod Pod, o Options) (bool, error) {
	sc := pod.Config.GetLinux().GetSecurityContext()
	choice, _, err := seccompRequest(sc.GetSeccomp(), sc.GetSeccompProfilePath(), o.SeccompDefault)
	return choice != seccompLocalhost, err
}
