package libct

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

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
	cfg, err := json.Marshal(&initConfig{
		Mode: modeExec, ID: st.ID, Seccomp: st.Spec.Linux.Seccomp, InitPid: st.Pid, CgroupPath: st.CgroupPath,
	})
	if err != nil {
		return nil, false, fmt.Errorf("exec template: %w: %w", err, errdefs.ErrInternal)
	}
	var b bytes.Buffer
	b.WriteString(ExecTemplateMagic + "\n")
	section := func(n int, data []byte) {
		b.WriteString(strconv.Itoa(n) + "\n")
		b.Write(data)
	}
	raw := bs.encode()
	section(len(raw), raw)
	for _, p := range procs {
		if strings.ContainsRune(p, '\n') {
			return nil, false, fmt.Errorf("cgroup file %q: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	section(len(procs), []byte(strings.Join(append(procs, ""), "\n")))
	section(len(cfg), cfg)
	return b.Bytes(), true, nil
}
