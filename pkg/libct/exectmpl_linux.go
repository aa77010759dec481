package libct

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// The exec template: everything about starting a process in a container
// that does not depend on the process, written at create so that the
// pod's C monitor can start an exec's init itself (no Go helper): it
// forks and executes the sealed binary as stage 0 with the init pipe on
// fd 3, writes its pid to each cgroup.procs file, sends the bootstrap,
// reads the sync bytes up to the init's pid, sends the config with
// "process" added, and reads the init's frames ("ready", or "error" with
// an errdefs.Wire) until EOF (the init pipe is close-on-exec: the exec
// happened). The format, one section after the other:
//
//	shim-exec-template-1\n
//	<n>\n<n bytes: the C stage's bootstrap>
//	<k>\n<k lines: a cgroup.procs file each>
//	<m>\n<m bytes: the init config as JSON, without "process">
//
// A container with a user namespace has none (the C stage would ask for
// its id maps): its execs go through the helper, as do TTY execs.
const (
	ExecTemplateFile  = "exec.tmpl"
	ExecTemplateMagic = "shim-exec-template-1"
)

// ExecTemplateNames are the names the C monitor shares with the init
// protocol; pkg/monitor puts them in cmon/protocol.h (TestExecTemplateNames
// checks them against the Go definitions).
func ExecTemplateNames() [][2]string {
	return [][2]string{
		{"FILE", ExecTemplateFile},
		{"MAGIC", ExecTemplateMagic},
		{"ENV_INIT_PIPE", envInitPipe},
		{"SYNC_PID", string(rune(syncPid))},
		{"SYNC_ERR", string(rune(syncErr))},
		{"MSG_TYPE", "type"},
		{"MSG_ERROR", "error"},
		{"TYPE_READY", msgReady},
		{"TYPE_ERROR", msgError},
		{"CREATE_FILE", CreateTemplateFile},
		{"CREATE_MAGIC", CreateTemplateMagic},
		{"ENV_FIFO_FD", envFifoFd},
		{"FIFO", fifoName},
		{"PLAN_MAGIC", cplanMagic},
	}
}

// writeExecTemplate writes the template of container st into its new
// state dir, unless the container cannot have one.
func writeExecTemplate(dir string, st *stored, cg cgroupManager) error {
	b, ok, err := execTemplate(st, cg)
	if err != nil || !ok {
		return err
	}
	if err := writeAtomic(dir, ExecTemplateFile, b); err != nil {
		return fmt.Errorf("exec template: %w", err)
	}
	return nil
}

func execTemplate(st *stored, cg cgroupManager) ([]byte, bool, error) {
	bs, userNS := execBootstrap(st.Spec, st.Pid)
	if userNS || bs.userMap {
		return nil, false, nil
	}
	procs, err := cg.ProcsFiles()
	if err != nil {
		return nil, false, err
	}
	cfg, err := json.Marshal(&execConfig{
		Mode: modeExec, ID: st.ID, Seccomp: st.Spec.Linux.Seccomp, InitPid: st.Pid, CgroupPath: st.CgroupPath,
	})
	if err != nil {
		return nil, false, fmt.Errorf("exec template: %w: %w", err, errdefs.ErrInternal)
	}
	b := newTemplate(ExecTemplateMagic)
	b.section(bs.encode())
	if err := b.lines(procs); err != nil {
		return nil, false, err
	}
	b.section(cfg)
	return b.Bytes(), true, nil
}

// execConfig is the initConfig of an exec template: the fields it sets
// and those initConfig always writes, under initConfig's names. Not
// initConfig itself: encoding/json builds the encoder of every type a
// struct reaches, and initConfig reaches the whole spec (about 1 ms of a
// create here, whose spec is coded by specjson).
type execConfig struct {
	Mode        string              `json:"mode"`
	ID          string              `json:"id"`
	ExtraFiles  int                 `json:"extraFiles"`
	NewMountNS  bool                `json:"newMountNS"`
	NewUTSNS    bool                `json:"newUTSNS"`
	NewCgroupNS bool                `json:"newCgroupNS"`
	UserNS      bool                `json:"userNS"`
	Seccomp     *specs.LinuxSeccomp `json:"seccomp,omitempty"`
	CgroupPath  string              `json:"cgroupPath,omitempty"`
	InitPid     int                 `json:"initPid,omitempty"`
}

// template writes the sections of a template (exec.tmpl, create.tmpl):
// "<n>\n" then n bytes, or n lines.
type template struct{ bytes.Buffer }

func newTemplate(magic string) *template {
	t := &template{}
	t.WriteString(magic + "\n")
	return t
}

func (t *template) section(data []byte) {
	t.WriteString(strconv.Itoa(len(data)) + "\n")
	t.Write(data)
}

// lines writes a section of lines (the cgroup.procs files).
func (t *template) lines(ls []string) error {
	for _, l := range ls {
		if strings.ContainsRune(l, '\n') {
			return fmt.Errorf("cgroup file %q: %w", l, errdefs.ErrInvalidArgument)
		}
	}
	t.WriteString(strconv.Itoa(len(ls)) + "\n")
	for _, l := range ls {
		t.WriteString(l + "\n")
	}
	return nil
}
