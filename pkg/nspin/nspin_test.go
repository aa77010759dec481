package nspin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (bool, bool) {
		return i.Mountpoint != path, false
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

// allThreadsIn checks that every thread of this process is in the host
// namespace of kind.
func allThreadsIn(t *testing.T, kind string, want uint64) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join("/proc/self/task", task.Name(), "ns", kind), &st); err != nil {
			continue // thread exited meanwhile
		}
		if st.Ino != want {
			t.Errorf("thread %s is in %s namespace %d, host is %d", task.Name(), kind, st.Ino, want)
		}
	}
}

func TestPinKinds(t *testing.T) {
	needRoot(t)
	for _, kind := range []string{Net, IPC, UTS} {
		t.Run(kind, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "netns")
			path := filepath.Join(dir, "pod-"+kind)
			if err := Pin(context.Background(), kind, path); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Unpin(path) })
			host := inode(t, "/proc/self/ns/"+kind)
			pinned := inode(t, path)
			if pinned == host {
				t.Fatalf("pinned %s namespace has the host's inode %d", kind, host)
			}
			if !mounted(t, path) {
				t.Fatalf("%s is not a mount point", path)
			}
			st, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o700 {
				t.Errorf("dir mode %v, want 0700", st.Mode().Perm())
			}
			// The file under the mount: its mode is visible once unmounted,
			// so check it through a second, unmounted file created the same way.
			if err := Check(kind, path); err != nil {
				t.Fatalf("Check: %v", err)
			}
			allThreadsIn(t, kind, host)
			if err := Unpin(path); err != nil {
				t.Fatal(err)
			}
			if mounted(t, path) {
				t.Fatalf("%s still mounted after Unpin", path)
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s still exists after Unpin: %v", path, err)
			}
			if err := Unpin(path); err != nil {
				t.Fatalf("second Unpin: %v", err)
			}
		})
	}
}

func TestPinFileMode(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	if err := Pin(context.Background(), Net, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unpin(path) })
	// Look under the mount through a second bind of the parent directory,
	// where the nsfs mount on top is not replicated (no MS_REC).
	peek := t.TempDir()
	if err := unix.Mount(filepath.Dir(path), peek, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(peek, unix.MNT_DETACH)
	st, err := os.Stat(filepath.Join(peek, "ns"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o444 || !st.Mode().IsRegular() {
		t.Fatalf("pin file mode %v, want regular 0444", st.Mode())
	}
}

func TestDoEntersNetns(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	if err := Pin(context.Background(), Net, path); err != nil {
		t.Fatal(err)
	}
	defer Unpin(path)
	host := inode(t, "/proc/self/ns/net")
	pinned := inode(t, path)

	var inside uint64
	var ifaces []net.Interface
	err := Do(Net, path, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inside = st.Ino
		var err error
		ifaces, err = net.Interfaces()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != pinned {
		t.Fatalf("inside Do the thread is in netns %d, want the pinned %d", inside, pinned)
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" {
		t.Fatalf("new netns interfaces %v, want only lo", ifaces)
	}
	// fn's error is returned.
	sentinel := errors.New("boom")
	if err := Do(Net, path, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	// No thread stays behind in the pod namespace, even under load.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			Do(Net, path, func() error { return nil })
		}()
	}
	wg.Wait()
	allThreadsIn(t, "net", host)
}

func TestHostname(t *testing.T) {
	needRoot(t)
	path := filepath.Join(t.TempDir(), "uts")
	if err := Pin(context.Background(), UTS, path); err != nil {
		t.Fatal(err)
	}
	defer Unpin(path)
	hostBefore, _ := os.Hostname()
	if err := SetHostname(path, "pod-a"); err != nil {
		t.Fatal(err)
	}
	got, err := Hostname(path)
	if err != nil || got != "pod-a" {
		t.Fatalf("Hostname = %q, %v; want pod-a", got, err)
	}
	if h, _ := os.Hostname(); h != hostBefore {
		t.Fatalf("host hostname changed from %q to %q", hostBefore, h)
	}
	allThreadsIn(t, "uts", inode(t, "/proc/self/ns/uts"))
	for _, bad := range []string{"", strings.Repeat("a", 65)} {
		if err := SetHostname(path, bad); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("SetHostname(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestErrors(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	uts := filepath.Join(dir, "uts")
	if err := Pin(context.Background(), UTS, uts); err != nil {
		t.Fatal(err)
	}
	defer Unpin(uts)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name  string
		err   func() error
		class error
		left  string // path that must not exist afterwards
	}{
		{"PinBadKind", func() error { return Pin(context.Background(), "mnt", filepath.Join(dir, "a")) }, errdefs.ErrInvalidArgument, filepath.Join(dir, "a")},
		{"PinEmptyPath", func() error { return Pin(context.Background(), Net, "") }, errdefs.ErrInvalidArgument, ""},
		{"PinCancelled", func() error { return Pin(cancelled, Net, filepath.Join(dir, "b")) }, context.Canceled, filepath.Join(dir, "b")},
		{"PinTwice", func() error { return Pin(context.Background(), UTS, uts) }, errdefs.ErrAlreadyExists, ""},
		{"DoMissing", func() error { return Do(Net, filepath.Join(dir, "missing"), func() error { return nil }) }, errdefs.ErrFailedPrecondition, ""},
		{"DoPlainFile", func() error { return Do(Net, plain, func() error { return nil }) }, errdefs.ErrFailedPrecondition, ""},
		{"DoWrongKind", func() error { return Do(Net, uts, func() error { return nil }) }, errdefs.ErrFailedPrecondition, ""},
		{"DoBadKind", func() error { return Do(User, uts, func() error { return nil }) }, errdefs.ErrInvalidArgument, ""},
		{"SysctlEscape", func() error { return SetSysctls(UTS, uts, map[string]string{"../../etc/x": "1"}) }, errdefs.ErrInvalidArgument, ""},
		{"SysctlMissingNS", func() error {
			return SetSysctls(IPC, filepath.Join(dir, "missing"), map[string]string{"kernel/shm_rmid_forced": "1"})
		}, errdefs.ErrFailedPrecondition, ""},
		{"UnpinDir", func() error { return Unpin(dir) }, errdefs.ErrInvalidArgument, ""},
		{"CheckPlain", func() error { return Check(Net, plain) }, errdefs.ErrFailedPrecondition, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if !errors.Is(err, tc.class) {
				t.Fatalf("got %v, want %v", err, tc.class)
			}
			if tc.left != "" {
				if _, err := os.Lstat(tc.left); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s left behind", tc.left)
				}
			}
		})
	}
	// The failed second Pin did not disturb the first.
	if err := Check(UTS, uts); err != nil {
		t.Fatalf("first pin damaged: %v", err)
	}
	// A leftover unmounted file is reused by Pin.
	if err := Pin(context.Background(), Net, plain); err != nil {
		t.Fatalf("Pin over leftover file: %v", err)
	}
	if err := Check(Net, plain); err != nil {
		t.Fatal(err)
	}
	if err := Unpin(plain); err != nil {
		t.Fatal(err)
	}
}

// TestPrepareDirPropagation checks that pins made after another mount
// namespace was copied from ours appear there, and that Unpin removes them
// there too.
func TestPrepareDirPropagation(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	dir := filepath.Join(t.TempDir(), "netns")
	if err := PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if err := PrepareDir(dir); err != nil {
		t.Fatalf("second PrepareDir: %v", err)
	}
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (bool, bool) { return i.Mountpoint != dir, false })
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || !strings.Contains(ms[0].Optional, "shared:") {
		t.Fatalf("after PrepareDir twice: mounts at %s = %+v, want one shared mount", dir, ms)
	}

	child := exec.Command("unshare", "--mount", "--propagation", "unchanged", "sleep", "60")
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	childMounts := fmt.Sprintf("/proc/%d/mountinfo", child.Process.Pid)
	// Wait until the child is in its own mount namespace.
	hostMnt := inode(t, "/proc/self/ns/mnt")
	deadline := time.Now().Add(5 * time.Second)
	for inode(t, fmt.Sprintf("/proc/%d/ns/mnt", child.Process.Pid)) == hostMnt {
		if time.Now().After(deadline) {
			t.Fatal("child never entered a new mount namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}

	path := filepath.Join(dir, "pod")
	if err := Pin(context.Background(), Net, path); err != nil {
		t.Fatal(err)
	}
	has := func() bool {
		b, err := os.ReadFile(childMounts)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && f[4] == path {
				return true
			}
		}
		return false
	}
	if !has() {
		t.Fatal("pin made after the child's mount namespace did not propagate to it")
	}
	if err := Unpin(path); err != nil {
		t.Fatal(err)
	}
	if has() {
		t.Fatal("Unpin did not propagate to the child's mount namespace")
	}
}

// TestAdopt pins a user namespace and a net namespace it owns, made by
// another process, and they outlive it; wrong kinds and double pins are
// refused and leave nothing behind.
func TestAdopt(t *testing.T) {
	needRoot(t)
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	proc := fmt.Sprintf("/proc/%d/ns/", cmd.Process.Pid)
	dir := t.TempDir()
	user, netns := filepath.Join(dir, "p-user"), filepath.Join(dir, "p-net")
	if err := Adopt(context.Background(), User, proc+"user", user); err != nil {
		t.Fatal(err)
	}
	defer Unpin(user)
	if err := Adopt(context.Background(), Net, proc+"net", netns); err != nil {
		t.Fatal(err)
	}
	defer Unpin(netns)
	cmd.Process.Kill()
	cmd.Wait()
	if err := Check(User, user); err != nil {
		t.Errorf("user pin: %v", err)
	}
	if err := Check(Net, netns); err != nil {
		t.Errorf("net pin: %v", err)
	}
	fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	owner, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(owner, &st)
	unix.Close(owner)
	if st.Ino != inode(t, user) {
		t.Errorf("the pinned net namespace is owned by user namespace %d, want the pinned one %d", st.Ino, inode(t, user))
	}

	for _, c := range []struct {
		name, kind, src string
		class           error
	}{
		{"net file as user", User, netns, errdefs.ErrFailedPrecondition},
		{"missing source", Net, filepath.Join(dir, "missing"), errdefs.ErrFailedPrecondition},
		{"unknown kind", "pid", "/proc/self/ns/pid", errdefs.ErrInvalidArgument},
		{"over an existing pin", Net, "/proc/self/ns/net", errdefs.ErrAlreadyExists},
	} {
		path := filepath.Join(dir, "bad")
		if c.class == errdefs.ErrAlreadyExists {
			path = netns
		}
		err := Adopt(context.Background(), c.kind, c.src, path)
		if !errors.Is(err, c.class) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.class)
		}
		if path != netns {
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s left behind", c.name, path)
			}
		}
	}
	if err := Check(Net, netns); err != nil {
		t.Errorf("net pin after the refusals: %v", err)
	}
}
