// Package lossydisk gives tests a filesystem whose power can be cut: ext4
// on a loop device backed by a sparse file. A copy of the backing file
// (Cut) holds exactly what the filesystem has sent to the device; what it
// still keeps in the page cache (written, never flushed) is missing from
// the copy, as after a power cut. Mounting the copy (Boot) replays its
// journal, as the boot after the cut would. Needs root, losetup and
// mkfs.ext4; without them the test is skipped, naming what is missing.
package lossydisk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Disk is a mounted ext4 filesystem on a loop device.
type Disk struct {
	Mnt string // where the filesystem is mounted

	dir     string
	backing string
	dev     string // /dev/loopN

	mu      sync.Mutex
	cuts    int
	retries int
	last    ioState // at the last copy
}

// Require skips the test on a host that cannot run it, naming what is
// missing.
func Require(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (loop devices, mounts)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s, not in PATH", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("needs loop devices (/dev/loop-control: %v)", err)
	}
}

// New makes and mounts a filesystem of size bytes. Everything (loop
// devices, mounts, files) goes at the test's cleanup.
func New(t testing.TB, size int64) *Disk {
	t.Helper()
	Require(t)
	d := &Disk{dir: t.TempDir()}
	d.backing = filepath.Join(d.dir, "disk.img")
	if err := os.WriteFile(d.backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(d.backing, size); err != nil {
		t.Fatal(err)
	}
	// Inode tables and journal written now, so no background
	// initialisation writes to the device during the test.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-N", "8192",
		"-E", "lazy_itable_init=0,lazy_journal_init=0", d.backing).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	d.dev = attach(t, d.backing)
	d.Mnt = filepath.Join(d.dir, "mnt")
	// commit=60: within a test the journal is committed only when the
	// code under test asks (fsync, syncfs), never by the 5-second timer.
	mount(t, d.dev, d.Mnt, "data=ordered,commit=60,noinit_itable")
	return d
}

// Retries is how many copies were taken again because the device wrote
// during them.
func (d *Disk) Retries() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.retries
}

// attach attaches file to a free loop device, detached at cleanup.
func attach(t testing.TB, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("free loop device")) {
			t.Skipf("needs a free loop device: losetup: %s", out)
		}
		t.Fatalf("losetup %s: %v: %s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// mount mounts dev at dir, unmounted at cleanup.
func mount(t testing.TB, dev, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, "ext4", 0, opts); err != nil {
		t.Fatalf("mount %s on %s (%s): %v", dev, dir, opts, err)
	}
	t.Cleanup(func() {
		var err error
		for range 50 {
			if err = unix.Unmount(dir, 0); err != unix.EBUSY {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// Boot mounts a copy Cut made (replaying its journal) on a loop device of
// its own and returns the mount point. Unmounted, detached and deleted at
// t's cleanup: use the subtest that checks the copy.
func Boot(t testing.TB, copyFile string) string {
	t.Helper()
	t.Cleanup(func() { os.Remove(copyFile) })
	dev := attach(t, copyFile)
	mnt := strings.TrimSuffix(copyFile, ".img") + ".mnt"
	mount(t, dev, mnt, "")
	return mnt
}

// ioState is the part of the device's I/O counters that moves when the
// backing file may change: writes (completed, merged, sectors), requests in
// flight, discards and flushes.
type ioState [6]uint64

func (d *Disk) ioState() (ioState, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(d.dev), "stat"))
	if err != nil {
		return ioState{}, err
	}
	f := strings.Fields(string(b))
	var s ioState
	for i, field := range []int{4, 5, 6, 8, 11, 15} {
		if field >= len(f) {
			continue
		}
		if s[i], err = strconv.ParseUint(f[field], 10, 64); err != nil {
			return ioState{}, fmt.Errorf("%s: %w", b, err)
		}
	}
	return s, nil
}

// Cut copies the device as it is now into a new file and returns its
// name. The copy is taken again while the device wrote during it, so it is
// the state of one moment, not a mix of several. Safe from any goroutine.
func (d *Disk) Cut() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cut()
}

// CutIfChanged is Cut when the device has written since the last copy,
// "" with no copy when it has not (the copy would be the same).
func (d *Disk) CutIfChanged() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cuts > 0 {
		now, err := d.ioState()
		if err != nil {
			return "", err
		}
		if now == d.last {
			return "", nil
		}
	}
	return d.cut()
}

func (d *Disk) cut() (string, error) {
	d.cuts++
	dst := filepath.Join(d.dir, fmt.Sprintf("cut-%02d.img", d.cuts))
	for range 2000 {
		before, err := d.ioState()
		if err != nil {
			return "", err
		}
		if before[3] == 0 {
			if err := copySparse(d.backing, dst); err != nil {
				return "", err
			}
			after, err := d.ioState()
			if err != nil {
				return "", err
			}
			if after == before {
				d.last = after
				return dst, nil
			}
		}
		d.retries++
		time.Sleep(time.Millisecond)
	}
	os.Remove(dst)
	return "", errors.New("the device never stayed idle long enough for a copy")
}

// copySparse copies src's data extents to dst at the same offsets.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	fd := int(in.Fd())
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	if err := out.Truncate(fi.Size()); err != nil {
		return err
	}
	return out.Close()
}
