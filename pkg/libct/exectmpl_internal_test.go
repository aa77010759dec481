package libct

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
)

type fakeCgroup struct {
	cgroupManager
	procs []string
}

func (f fakeCgroup) ProcsFiles() ([]string, error) { return f.procs, nil }

// TestExecTemplate: the template is the exec's bootstrap (the init's
// namespaces, mount last), the cgroup files and the init config without a
// process, in the sections the C monitor reads; none with a user
// namespace.
func TestExecTemplate(t *testing.T) {
	spec := &specs.Spec{Linux: &specs.Linux{
		Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/x"}},
		Seccomp:    &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
	}}
	st := &stored{State: State{ID: "c1", Pid: 4242, CgroupPath: "/shim/c1"}, Spec: spec}
	cg := fakeCgroup{procs: []string{"/sys/fs/cgroup/pids/shim/c1/cgroup.procs", "/sys/fs/cgroup/memory/shim/c1/cgroup.procs"}}
	b, ok, err := execTemplate(st, cg)
	if err != nil || !ok {
		t.Fatalf("template: %v %v", ok, err)
	}
	r := bytes.NewBuffer(b)
	line := func() string {
		s, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("short template: %q", b)
		}
		return strings.TrimSuffix(s, "\n")
	}
	section := func() int {
		n, err := strconv.Atoi(line())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if line() != ExecTemplateMagic {
		t.Fatal("no magic")
	}
	bs := r.Next(section())
	wantBS, _ := execBootstrap(spec, 4242)
	if !bytes.Equal(bs, wantBS.encode()) || !bytes.Contains(bs, []byte("mnt:/proc/4242/ns/mnt")) {
		t.Errorf("bootstrap %q", bs)
	}
	var procs []string
	for n := section(); n > 0; n-- {
		procs = append(procs, line())
	}
	if strings.Join(procs, ",") != strings.Join(cg.procs, ",") {
		t.Errorf("cgroup files %v", procs)
	}
	raw := r.Next(section())
	if r.Len() != 0 {
		t.Errorf("%d bytes after the config", r.Len())
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if _, has := cfg["process"]; has || cfg["mode"] != modeExec || cfg["initPid"] != 4242.0 || cfg["seccomp"] == nil || cfg["userNS"] != false {
		t.Errorf("config %s", raw)
	}
	// What the init reads is what initConfig itself would have written.
	want, _ := json.Marshal(&initConfig{Mode: modeExec, ID: "c1", Seccomp: spec.Linux.Seccomp, InitPid: 4242, CgroupPath: "/shim/c1"})
	var got, wantCfg initConfig
	json.Unmarshal(raw, &got)
	json.Unmarshal(want, &wantCfg)
	if !bytes.Equal(raw, want) || !reflect.DeepEqual(got, wantCfg) {
		t.Errorf("config %s, initConfig's %s", raw, want)
	}

	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	if _, ok, err := execTemplate(st, cg); ok || err != nil {
		t.Errorf("a user namespace has a template: %v", err)
	}
	spec.Linux.Namespaces = spec.Linux.Namespaces[:3]
	cg.procs = []string{"/sys/fs/cgroup/x\ny/cgroup.procs"}
	if _, _, err := execTemplate(st, cg); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a newline in a cgroup path: %v", err)
	}
}

// TestExecTemplateNames: the names the C monitor gets are the ones the
// init protocol uses.
func TestExecTemplateNames(t *testing.T) {
	names := map[string]string{}
	for _, n := range ExecTemplateNames() {
		names[n[0]] = n[1]
	}
	if names["ENV_INIT_PIPE"] != envInitPipe || names["SYNC_PID"] != string(rune(syncPid)) || names["SYNC_ERR"] != string(rune(syncErr)) {
		t.Errorf("names %v", names)
	}
	b, _ := json.Marshal(initMsg{Type: "ready", Error: &errdefs.Wire{}})
	var m map[string]json.RawMessage
	json.Unmarshal(b, &m)
	if _, ok := m[names["MSG_TYPE"]]; !ok {
		t.Errorf("no %q in %s", names["MSG_TYPE"], b)
	}
	if _, ok := m[names["MSG_ERROR"]]; !ok {
		t.Errorf("no %q in %s", names["MSG_ERROR"], b)
	}
}
