//go:build !shim_init

package libct

import (
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
