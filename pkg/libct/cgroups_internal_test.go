//go:build !shim_init

package libct

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestCgroup2Paths runs the v2 manager on this host's cgroup2 mount (on a
// hybrid host it has no controllers, but the core files work: procs,
// freeze, kill, delete).
func TestCgroup2Paths(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	mp := "/sys/fs/cgroup/unified"
	var st unix.Statfs_t
	if cgroupVersion() == 2 {
		mp = cgroup2Root
	} else if unix.Statfs(mp, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skip("needs a host with a cgroup2 mount (unified or /sys/fs/cgroup/unified)")
	}
	path := "/shim-v2test-" + strconv.Itoa(os.Getpid())
	cg, err := newCgroup2(mp, path, &specs.LinuxResources{})
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
