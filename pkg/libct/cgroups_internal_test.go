//go:build !shim_init

package libct

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

// TestCgroup2Paths runs the v2 manager on this host's cgroup2 mount. On a
// hybrid host (the library manages v2 only at /sys/fs/cgroup) the test
// runs itself again in a mount namespace where the cgroup2 mount is bound
// over /sys/fs/cgroup: it has no controllers there, but the core files
// work (procs, freeze, kill, delete).
func TestCgroup2Paths(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	mp := cgroup2Root
	if cgroupVersion() != 2 {
		var st unix.Statfs_t
		if unix.Statfs("/sys/fs/cgroup/unified", &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
			t.Skip("needs a host with a cgroup2 mount (unified or /sys/fs/cgroup/unified)")
		}
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && exec "$0" -test.run '^TestCgroup2Paths$' -test.v`, exe).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "v2 manager on a unified mount") {
			t.Fatalf("in a mount namespace with cgroup2 at /sys/fs/cgroup: %v\n%s", err, out)
		}
		return
	}
	t.Log("v2 manager on a unified mount")
	path := "/shim-v2test-" + strconv.Itoa(os.Getpid())
	cg, err := newCgroup(2, path, &specs.LinuxResources{})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Join(mp, path))
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	if err := cg.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pids, err := cg.Pids()
	if err != nil || len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Fatalf("pids %v %v", pids, err)
	}
	if err := cg.Freeze(); err != nil {
		t.Fatal(err)
	}
	if !cg.Frozen() {
		t.Errorf("not frozen after Freeze")
	}
	if err := cg.Thaw(); err != nil || cg.Frozen() {
		t.Errorf("thaw: %v frozen=%v", err, cg.Frozen())
	}
	if err := killCgroup(cg); err != nil {
		t.Fatal(err)
	}
	if err := cg.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mp, path)); !os.IsNotExist(err) {
		t.Errorf("cgroup dir left behind")
	}
}

// TestCgroup1Delete: on a v1 host Delete removes a leaf cgroup from every
// hierarchy with one rmdir each, one with a child cgroup through
// the library's walk, and refuses one with a process in it (and removes it
// once the process is gone).
func TestCgroup1Delete(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	if cgroupVersion() != 1 {
		t.Skip("needs a cgroup v1 (legacy or hybrid) host")
	}
	base := "/shim-v1test-" + strconv.Itoa(os.Getpid())
	mk := func(name string) (cgroupManager, []string) {
		cg, err := newCgroup(1, base+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		files, err := cg.ProcsFiles()
		if err != nil || len(files) < 2 {
			t.Fatalf("procs files %v %v", files, err)
		}
		dirs := make([]string, len(files))
		for i, f := range files {
			dirs[i] = filepath.Dir(f)
		}
		t.Cleanup(func() {
			for _, d := range dirs {
				os.Remove(filepath.Join(d, "child"))
				os.Remove(d)
			}
		})
		return cg, dirs
	}
	gone := func(what string, dirs []string) {
		t.Helper()
		for _, d := range dirs {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("%s: %s is still there (%v)", what, d, err)
			}
		}
	}

	leaf, dirs := mk("-leaf")
	if err := leaf.Delete(); err != nil {
		t.Fatal(err)
	}
	gone("leaf", dirs)
	if err := leaf.Delete(); err != nil {
		t.Errorf("second delete: %v", err)
	}

	parent, dirs := mk("-parent")
	if err := os.Mkdir(filepath.Join(dirs[len(dirs)-1], "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := parent.Delete(); err != nil {
		t.Fatal(err)
	}
	gone("with a child", dirs)

	busy, dirs := mk("-busy")
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := busy.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := busy.Delete(); err == nil {
		t.Error("a cgroup with a process in it was deleted")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := busy.Delete(); err != nil {
		t.Fatal(err)
	}
	gone("after its process", dirs)
}

// TestV1Paths: the v1 directories libct computes are the library's own,
// but for a hybrid host's cgroup2 hierarchy (the key ""), which libct
// leaves out.
func TestV1Paths(t *testing.T) {
	if cgroupVersion() != 1 {
		t.Skip("needs a cgroup v1 (legacy or hybrid) host")
	}
	got, err := v1Paths("/shim/x")
	if err != nil {
		t.Fatal(err)
	}
	m, err := fs.NewManager(&cgroups.Cgroup{Path: "/shim/x", Resources: &cgroups.Resources{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := m.GetPaths()
	if _, ok := got[""]; ok {
		t.Errorf("the hybrid cgroup2 hierarchy is in %v", got)
	}
	delete(want, "")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("paths\n %v\nthe library's\n %v", got, want)
	}
}

// TestToResources: the spec's resources in the library's form; what a
// version cannot apply is refused (never dropped), shares become the v2
// weight, and no device rules leave the devices alone.
func TestToResources(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	u32 := func(v uint32) *uint32 { return &v }
	yes := true
	v2only := map[string]*specs.LinuxResources{
		"kernelTCP":        {Memory: &specs.LinuxMemory{KernelTCP: i64(1 << 20)}},
		"swappiness":       {Memory: &specs.LinuxMemory{Swappiness: u64(10)}},
		"disableOOMKiller": {Memory: &specs.LinuxMemory{DisableOOMKiller: &yes}},
		"realtime":         {CPU: &specs.LinuxCPU{RealtimeRuntime: i64(1000)}},
		"leafWeight":       {BlockIO: &specs.LinuxBlockIO{LeafWeight: new(uint16)}},
		"device leaf":      {BlockIO: &specs.LinuxBlockIO{WeightDevice: []specs.LinuxWeightDevice{{LeafWeight: func() *uint16 { v := uint16(10); return &v }()}}}},
		"classID":          {Network: &specs.LinuxNetwork{ClassID: u32(7)}},
	}
	*v2only["leafWeight"].BlockIO.LeafWeight = 10
	for name, r := range v2only {
		if _, err := toResources(2, r); !errdefs.Is(err, errdefs.ErrNotImplemented) {
			t.Errorf("%s on v2: %v, want not implemented", name, err)
		}
		if _, err := toResources(1, r); err != nil {
			t.Errorf("%s on v1: %v", name, err)
		}
	}
	for _, v := range []int{1, 2} {
		if _, err := toResources(v, &specs.LinuxResources{Memory: &specs.LinuxMemory{Kernel: i64(1 << 20)}}); !errdefs.Is(err, errdefs.ErrNotImplemented) {
			t.Errorf("memory.kernel on v%d: %v", v, err)
		}
		for _, devs := range [][]specs.LinuxDeviceCgroup{nil, {}} {
			if out, err := toResources(v, &specs.LinuxResources{Devices: devs, Unified: map[string]string{}}); err != nil || !out.SkipDevices || out.Unified != nil {
				t.Errorf("v%d devices %v: %+v %v", v, devs, out, err)
			}
		}
	}
	out, err := toResources(2, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(1024)}})
	if err != nil || out.CpuWeight == 0 || out.CpuWeight != cgroups.ConvertCPUSharesToCgroupV2Value(1024) {
		t.Errorf("shares on v2: %+v %v", out, err)
	}
	if out, _ := toResources(1, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(1024)}}); out.CpuShares != 1024 || out.CpuWeight != 0 {
		t.Errorf("shares on v1: %+v", out)
	}
}

// TestCgroupErrClass: libct's own refusals keep their class; the library's
// memory-limit refusals (no errno) are failed preconditions.
func TestCgroupErrClass(t *testing.T) {
	for err, want := range map[error]error{
		fmt.Errorf("x: %w", errdefs.ErrNotImplemented):                                  errdefs.ErrNotImplemented,
		errors.New("unable to set memory limit to 1 (current usage: 2, peak usage: 3)"): errdefs.ErrFailedPrecondition,
		errors.New("rejecting memory limit 1 <= usage 2"):                               errdefs.ErrFailedPrecondition,
		fmt.Errorf("write: %w", unix.EINVAL):                                            errdefs.ErrInvalidArgument,
		fmt.Errorf("write: %w", os.ErrNotExist):                                         errdefs.ErrNotImplemented,
	} {
		if got := cgroupErrClass(err); got != want {
			t.Errorf("%v: %v, want %v", err, got, want)
		}
	}
	if err := UpdateCgroup("/shim-nope", &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true}}}); !errdefs.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("device rules through UpdateCgroup: %v", err)
	}
}
