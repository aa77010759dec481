package libct

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

// A direct create: the container's init started by another process (the
// pod's C monitor) from a create template, so that no Go helper runs for
// it. PrepareCreate does what Create does before the init starts (checks,
// state dir, exec fifo, cgroup) and writes the template; the starter
// executes the sealed binary as stage 0 with fds 0-2 the stdio, 3 the
// init pipe, 4 the binary and 5 the exec fifo (O_PATH), envFifoFd=5 and
// envInitPipe=3; it writes oom_score_adj of stage 0 and its pid to each
// cgroup.procs file, sends the bootstrap, reads the sync bytes up to the
// init's pid, sends the config frame and reads the init's frames until
// "ready" (or "error" with an errdefs.Wire). It keeps its end of the init
// pipe: at the start it opens the exec fifo for reading, and EOF on the
// pipe then means the exec happened (an "error" frame: the exec failed).
// CommitCreate records the init's pid: until then the state is that of a
// stopped container, so Delete removes what PrepareCreate made.
//
// The template, one section after the other:
//
//	shim-create-template-1\n
//	<n>\n<n bytes: the C stage's bootstrap>
//	<k>\n<k lines: a cgroup.procs file each>
//	<j>\n<j bytes: the file of the memory cgroup that counts OOM kills, or none>
//	<o>\n<o bytes: oom_score_adj in decimal, or none>
//	<m>\n<m bytes: the init config as JSON>
const (
	CreateTemplateFile  = "create.tmpl"
	CreateTemplateMagic = "shim-create-template-1"
)

// PrepareCreate prepares container id for a direct create. It reports
// false, having made nothing, when the spec needs what only Create does:
// a terminal, hooks the runtime runs, a user namespace, idmapped mounts.
// With cinit (the init binary that will run it knows the C init) the
// template holds the C init's plan when the spec allows one.
func PrepareCreate(ctx context.Context, stateRoot, id string, spec *specs.Spec, bundle string, cinit bool) (_ bool, retErr error) {
	if why := directRefusal(spec); why != "" {
		log.G(ctx).WithField(log.FieldContainerID, id).Debugf("no direct create (%s): the helper creates", why)
		return false, nil
	}
	p, err := prepare(ctx, stateRoot, id, spec, bundle, false)
	if err != nil {
		return false, err
	}
	defer func() {
		if retErr != nil {
			p.undo()
		}
	}()
	p.c.st = p.stored(false)
	if err := writeState(p.c.dir, p.c.st); err != nil {
		return false, err
	}
	b, err := p.createTemplate(ctx, cinit)
	if err != nil {
		return false, err
	}
	if err := writeAtomic(p.c.dir, CreateTemplateFile, b); err != nil {
		return false, fmt.Errorf("create template: %w", err)
	}
	return true, nil
}

// directRefusal says why spec cannot be created directly ("": it can).
// A spec that does not parse goes to Create, which says what is wrong.
func directRefusal(spec *specs.Spec) string {
	if spec == nil || spec.Process == nil || spec.Linux == nil {
		return "incomplete spec"
	}
	if spec.Process.Terminal {
		return "terminal"
	}
	if h := spec.Hooks; h != nil &&
		len(h.Prestart)+len(h.CreateRuntime)+len(h.CreateContainer)+len(h.StartContainer)+len(h.Poststart) > 0 { //nolint:staticcheck // Prestart: deprecated, still run
		return "hooks"
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			return "user namespace"
		}
	}
	for _, m := range spec.Mounts {
		pm, err := parseSpecMount(m)
		if err != nil || needsPreparedMount(pm, false) {
			return "prepared mount"
		}
	}
	return ""
}

func (p *prepared) createTemplate(ctx context.Context, cinit bool) ([]byte, error) {
	procs, err := p.c.cg.ProcsFiles()
	if err != nil {
		return nil, err
	}
	icfg := p.config(CreateOpts{})
	bs := p.bs
	cfg := cplanFor(ctx, icfg, cinit)
	if cfg != nil {
		bs.cinit = true
	} else if cfg, err = json.Marshal(icfg); err != nil {
		return nil, fmt.Errorf("create template: %w: %w", err, errdefs.ErrInternal)
	}
	var oom string
	if v := p.oom(); v != nil {
		if *v < -1000 || *v > 1000 {
			return nil, fmt.Errorf("oomScoreAdj %d out of range [-1000, 1000]: %w", *v, errdefs.ErrInvalidArgument)
		}
		oom = strconv.Itoa(*v)
	}
	b := newTemplate(CreateTemplateMagic)
	b.section(bs.encode())
	if err := b.lines(procs); err != nil {
		return nil, err
	}
	b.section([]byte(oomCountFile(procs)))
	b.section([]byte(oom))
	b.section(cfg)
	return b.Bytes(), nil
}

// oomCountFile is the file whose "oom_kill N" line counts the OOM kills
// of the cgroup of procs (memory.oom_control of the v1 memory hierarchy,
// memory.events on v2), or "".
func oomCountFile(procs []string) string {
	for _, f := range procs {
		for _, name := range []string{"memory.oom_control", "memory.events"} {
			p := filepath.Join(filepath.Dir(f), name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

// CommitCreate records pid as the init of container id, prepared by
// PrepareCreate and started from its template.
func CommitCreate(stateRoot, id string, pid int) error {
	c, err := Load(stateRoot, id)
	if err != nil {
		return err
	}
	if c.st.Pid != 0 {
		return fmt.Errorf("container %q has its init (pid %d): %w", id, c.st.Pid, errdefs.ErrFailedPrecondition)
	}
	if pid <= 0 {
		return fmt.Errorf("container %q: init pid %d: %w", id, pid, errdefs.ErrInvalidArgument)
	}
	if _, err := c.cgroup(); err != nil {
		return err
	}
	if err := c.record(pid); err != nil {
		return err
	}
	os.Remove(filepath.Join(c.dir, CreateTemplateFile))
	return nil
}
