package libct

import (
	"fmt"
	"io"
	"os"
	"strings"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

func seccompAction(a specs.LinuxSeccompAction, errnoRet *uint) (libseccomp.ScmpAction, error) {
	errno := func(def uint) libseccomp.ScmpAction {
		if errnoRet != nil {
			def = *errnoRet
		}
		return libseccomp.ActErrno.SetReturnCode(int16(def))
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActErrno:
		return errno(uint(unix.EPERM)), nil
	case specs.ActTrace:
		return libseccomp.ActTrace.SetReturnCode(int16(unix.EPERM)), nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	case specs.ActNotify:
		return 0, fmt.Errorf("seccomp action %s: %w", a, errdefs.ErrNotImplemented)
	}
	return 0, fmt.Errorf("unknown seccomp action %q: %w", a, errdefs.ErrInvalidArgument)
}

var seccompOps = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual:     libseccomp.CompareNotEqual,
	specs.OpLessThan:     libseccomp.CompareLess,
	specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
	specs.OpEqualTo:      libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
	specs.OpGreaterThan:  libseccomp.CompareGreater,
	specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
}

func seccompArch(a specs.Arch) (libseccomp.ScmpArch, error) {
	n := strings.ToLower(strings.TrimPrefix(string(a), "SCMP_ARCH_"))
	switch n {
	case "x86_64":
		n = "amd64"
	case "aarch64":
		n = "arm64"
	}
	arch, err := libseccomp.GetArchFromString(n)
	if err != nil {
		return 0, fmt.Errorf("seccomp architecture %q: %w", a, errdefs.ErrInvalidArgument)
	}
	return arch, nil
}

// buildSeccomp compiles the spec's filter. Syscalls unknown to libseccomp
// are skipped, as other runtimes do, so one profile serves many kernels.
func buildSeccomp(s *specs.LinuxSeccomp, nnp bool) (*libseccomp.ScmpFilter, error) {
	def, err := seccompAction(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	ok := false
	defer func() {
		if !ok {
			f.Release()
		}
	}()
	for _, a := range s.Architectures {
		arch, err := seccompArch(a)
		if err != nil {
			return nil, err
		}
		if err := f.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp add arch %s: %w: %w", a, err, errdefs.ErrInvalidArgument)
		}
	}
	if err := f.SetNoNewPrivsBit(nnp); err != nil {
		return nil, fmt.Errorf("seccomp nnp bit: %w", err)
	}
	for _, fl := range s.Flags {
		switch fl {
		case specs.LinuxSeccompFlagLog:
			err = f.SetLogBit(true)
		case specs.LinuxSeccompFlagSpecAllow:
			err = f.SetSSB(true)
		case specs.LinuxSeccompFlagWaitKillableRecv:
			err = f.SetWaitKill(true)
		case "SECCOMP_FILTER_FLAG_TSYNC":
			// Only one thread execs; nothing to synchronise.
		default:
			return nil, fmt.Errorf("seccomp flag %q: %w", fl, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return nil, fmt.Errorf("seccomp flag %s: %w: %w", fl, err, errdefs.ErrNotImplemented)
		}
	}
	for _, rule := range s.Syscalls {
		act, err := seccompAction(rule.Action, rule.ErrnoRet)
		if err != nil {
			return nil, err
		}
		if act == def {
			continue
		}
		var conds []libseccomp.ScmpCondition
		sameArg := false
		argSeen := map[uint]bool{}
		for _, a := range rule.Args {
			op, ok := seccompOps[a.Op]
			if !ok {
				return nil, fmt.Errorf("seccomp operator %q: %w", a.Op, errdefs.ErrInvalidArgument)
			}
			if a.Index > 5 {
				return nil, fmt.Errorf("seccomp argument index %d: %w", a.Index, errdefs.ErrInvalidArgument)
			}
			vals := []uint64{a.Value}
			if op == libseccomp.CompareMaskedEqual {
				vals = []uint64{a.Value, a.ValueTwo}
			}
			c, err := libseccomp.MakeCondition(a.Index, op, vals...)
			if err != nil {
				return nil, fmt.Errorf("seccomp condition: %w: %w", err, errdefs.ErrInvalidArgument)
			}
			if argSeen[a.Index] {
				sameArg = true
			}
			argSeen[a.Index] = true
			conds = append(conds, c)
		}
		for _, name := range rule.Names {
			sc, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				continue
			}
			switch {
			case len(conds) == 0:
				err = f.AddRule(sc, act)
			case sameArg:
				// libseccomp cannot AND two conditions on one
				// argument; like runc, add them as separate rules.
				for _, c := range conds {
					if err = f.AddRuleConditional(sc, act, []libseccomp.ScmpCondition{c}); err != nil {
						break
					}
				}
			default:
				err = f.AddRuleConditional(sc, act, conds)
			}
			if err != nil {
				return nil, fmt.Errorf("seccomp rule for %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
			}
		}
	}
	ok = true
	return f, nil
}

// ValidateSeccomp compiles a filter without loading it.
func ValidateSeccomp(s *specs.LinuxSeccomp) error {
	f, err := buildSeccomp(s, false)
	if err != nil {
		return err
	}
	f.Release()
	return nil
}

// seccompProg is a compiled filter, loaded later with one raw syscall (no
// allocation: the rlimits of the container may already be in force).
type seccompProg struct {
	filter []unix.SockFilter
	flags  uintptr
}

// compileSeccomp builds the spec's filter and exports its BPF program.
func compileSeccomp(s *specs.LinuxSeccomp) (*seccompProg, error) {
	f, err := buildSeccomp(s, false)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	raw, err := exportBPF(f)
	if err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w: %w", err, errdefs.ErrInternal)
	}
	const insn = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(raw) == 0 || len(raw)%insn != 0 {
		return nil, fmt.Errorf("seccomp program of %d bytes: %w", len(raw), errdefs.ErrInternal)
	}
	prog := &seccompProg{filter: make([]unix.SockFilter, len(raw)/insn)}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog.filter[0])), len(raw)), raw)
	for _, fl := range s.Flags {
		switch fl {
		case specs.LinuxSeccompFlagLog:
			prog.flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			prog.flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		}
	}
	return prog, nil
}

// load installs the program on this thread.
func (p *seccompProg) load() error {
	fprog := unix.SockFprog{Len: uint16(len(p.filter)), Filter: &p.filter[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, p.flags, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("load seccomp filter: %w: %w", e, errdefs.ErrPermissionDenied)
	}
	return nil
}

// exportBPF returns the filter's BPF program (through a memfd: libseccomp
// before 2.6 exports to a file descriptor only).
func exportBPF(f *libseccomp.ScmpFilter) ([]byte, error) {
	fd, err := unix.MemfdCreate("seccomp-bpf", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	mf := os.NewFile(uintptr(fd), "seccomp-bpf")
	defer mf.Close()
	if err := f.ExportBPF(mf); err != nil {
		return nil, err
	}
	if _, err := mf.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return capread.Read(mf, 1<<20)
}
