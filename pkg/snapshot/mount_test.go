package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestCompactOverlayData(t *testing.T) {
	prefix := "/var/lib/shim/a-rather-long-root-directory-name/snapshots"
	var lowers []string
	for i := 128; i > 0; i-- {
		lowers = append(lowers, fmt.Sprintf("%s/%d/fs", prefix, i))
	}
	data := []string{"index=off", "workdir=" + prefix + "/200/work", "upperdir=" + prefix + "/200/fs", "lowerdir=" + strings.Join(lowers, ":")}
	if n := len(strings.Join(data, ",")); n < unix.Getpagesize() {
		t.Fatalf("test data is only %d bytes", n)
	}
	dir, opts, err := compactOverlayData(data)
	if err != nil {
		t.Fatal(err)
	}
	if dir != prefix {
		t.Errorf("common dir %q, want %q", dir, prefix)
	}
	if !strings.HasPrefix(opts, "index=off,workdir=200/work,upperdir=200/fs,lowerdir=128/fs:127/fs:") || !strings.HasSuffix(opts, ":1/fs") {
		t.Errorf("compacted options %q", opts)
	}
	if _, _, err := compactOverlayData([]string{"lowerdir=/a/x:/b/y"}); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no common parent: %v", err)
	}
	var many []string
	for i := 0; i < 1000; i++ {
		many = append(many, fmt.Sprintf("/r/snapshots/%d/fs", i))
	}
	if _, _, err := compactOverlayData([]string{"lowerdir=" + strings.Join(many, ":")}); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("1000 layers: %v", err)
	}
}

func mounted(t *testing.T, p string) bool {
	t.Helper()
	m, err := mountinfo.Mounted(p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMountAllOverlayBeyondAPage(t *testing.T) {
	requireRoot(t)
	base := filepath.Join(t.TempDir(), strings.Repeat("long-directory-name-", 5), "snapshots")
	const n = 150
	var lowers []string
	for i := n - 1; i >= 0; i-- {
		d := filepath.Join(base, fmt.Sprint(i), "fs")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if i == 0 { // the same name in every layer: the nearest wins
			continue
		}
		lowers = append(lowers, d)
	}
	lowers = append(lowers, filepath.Join(base, "0", "fs"))
	up := filepath.Join(base, "up")
	for _, d := range []string{"fs", "work"} {
		if err := os.MkdirAll(filepath.Join(up, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{
		"workdir=" + filepath.Join(up, "work"), "upperdir=" + filepath.Join(up, "fs"), "lowerdir=" + strings.Join(lowers, ":"),
	}}
	if n := len(strings.Join(m.Options, ",")); n < unix.Getpagesize() {
		t.Fatalf("options are only %d bytes", n)
	}
	wd, _ := os.Getwd()
	target := t.TempDir()
	if err := MountAll([]Mount{m}, target); err != nil {
		t.Fatal(err)
	}
	defer UnmountAll(target)
	if now, _ := os.Getwd(); now != wd {
		t.Errorf("MountAll changed the process working directory to %s", now)
	}
	for _, i := range []int{0, 1, n / 2, n - 1} {
		if b, err := os.ReadFile(filepath.Join(target, fmt.Sprintf("f%d", i))); err != nil || string(b) != fmt.Sprint(i) {
			t.Errorf("f%d = %q, %v", i, b, err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "new"), []byte("x"), 0o644); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(up, "fs", "new")); err != nil {
		t.Errorf("write did not reach the upper dir: %v", err)
	}
	if err := UnmountAll(target); err != nil {
		t.Fatal(err)
	}
	if mounted(t, target) {
		t.Error("still mounted")
	}
}

func TestMountAllBindAndUnmountAll(t *testing.T) {
	requireRoot(t)
	src, target := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MountAll([]Mount{{Type: "bind", Source: src, Options: []string{"ro", "rbind", "nosuid"}}}, target); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "g"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write to ro bind: %v", err)
	}
	// Stack a submount and a second mount on top: UnmountAll takes all.
	if err := unix.Mount("tmpfs", filepath.Join(target, "sub"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := MountAll([]Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}}}, target); err != nil {
		t.Fatal(err)
	}
	if err := UnmountAll(target); err != nil {
		t.Fatal(err)
	}
	if left, err := mountinfo.GetMounts(mountinfo.PrefixFilter(target)); err != nil || len(left) > 0 {
		t.Errorf("mounts left after UnmountAll: %v %v", left, err)
	}
	if err := UnmountAll(target); err != nil {
		t.Errorf("UnmountAll of a plain directory: %v", err)
	}
	if err := UnmountAll(filepath.Join(target, "missing")); err != nil {
		t.Errorf("UnmountAll of a missing path: %v", err)
	}
}

func TestMountAllRollsBack(t *testing.T) {
	requireRoot(t)
	src, target := t.TempDir(), t.TempDir()
	err := MountAll([]Mount{
		{Type: "bind", Source: src, Options: []string{"rbind"}},
		{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/nonexistent/a:/nonexistent/b"}},
	}, target)
	if err == nil {
		t.Fatal("MountAll with a bad overlay succeeded")
	}
	if mounted(t, target) {
		t.Error("the first mount was not undone")
		UnmountAll(target)
	}
}
