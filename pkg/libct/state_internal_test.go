package libct

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

// TestStateFile: the state file round-trips (its spec through specjson),
// and one that encoding/json wrote (shim before specjson) reads the same.
func TestStateFile(t *testing.T) {
	spec := testbundle.Spec("/bin/sh", "-c", "a && b < c")
	spec.Annotations = map[string]string{"io.kubernetes.pod": "x"}
	spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: new(int64)}}
	st := &stored{
		State: State{OCIVersion: specs.Version, ID: "c1", Status: StatusCreated, Pid: 42, PidStart: 7, Bundle: "/b",
			Rootfs: "/b/rootfs", Annotations: spec.Annotations, Created: time.Now().UTC().Round(0), CgroupPath: "/shim/c1"},
		Spec: spec, CgroupVersion: 1, Namespaces: []string{"pid", "mount"}, InitExe: "/x",
	}
	root := t.TempDir()
	dir := stateDir(root, "c1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		got, err := readState(root, "c1")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !reflect.DeepEqual(got, st) {
			t.Errorf("%s: read back\n %+v\nwant\n %+v", what, got, st)
		}
	}
	if err := writeState(dir, st); err != nil {
		t.Fatal(err)
	}
	check("specjson")
	old, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), old, 0o600); err != nil {
		t.Fatal(err)
	}
	check("encoding/json")
	st.Spec = nil
	if err := writeState(dir, st); err != nil {
		t.Fatal(err)
	}
	check("no spec")
}
