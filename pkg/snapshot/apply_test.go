package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
	tt "github.com/shim-cri/shim/pkg/snapshot/internal/tartest"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

// treeState describes every entry below dir (except the subtree skip) by
// type, mode, owner, size, content hash, link target, mtime and xattrs.
func treeState(t testing.TB, dir, skip string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d size=%d nlink=%d mtime=%d.%d rdev=%d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec, st.Rdev)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " sha=" + hex.EncodeToString(sum[:8])
		case unix.S_IFLNK:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " link=" + l
		}
		dfd, err := unix.Open(filepath.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		xa, err := fsutil.Xattrs(dfd, filepath.Base(p))
		unix.Close(dfd)
		if err != nil {
			return err
		}
		var names []string
		for n, v := range xa {
			names = append(names, n+"="+string(v))
		}
		sort.Strings(names)
		desc += " xattrs=" + strings.Join(names, ",")
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return out
}

func diffState(before, after map[string]string) []string {
	var d []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			d = append(d, "removed "+p)
		} else if a != b {
			d = append(d, "changed "+p+": "+b+" -> "+a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			d = append(d, "created "+p)
		}
	}
	sort.Strings(d)
	return d
}

// sandbox is a temp dir holding the apply root and, beside it, a sentinel
// directory that hostile layers aim at.
type sandbox struct {
	tmp, root, out string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	tmp := t.TempDir()
	s := sandbox{tmp: tmp, root: filepath.Join(tmp, "root"), out: filepath.Join(tmp, "outside")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(s.root, 0o755))
	must(os.MkdirAll(filepath.Join(s.out, "etc"), 0o755))
	must(os.MkdirAll(filepath.Join(s.out, "d", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(s.out, "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(os.WriteFile(filepath.Join(s.out, "etc", "shadow"), []byte("secret"), 0o600))
	must(os.WriteFile(filepath.Join(s.out, "d", "sub", "f"), []byte("f"), 0o644))
	must(os.Symlink("passwd", filepath.Join(s.out, "link")))
	return s
}

// forbiddenInodes are inodes nothing in the root may share (hard links out).
func forbiddenInodes(t testing.TB, dirs ...string) map[[2]uint64]string {
	t.Helper()
	m := make(map[[2]uint64]string)
	add := func(p string) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			m[[2]uint64{st.Dev, st.Ino}] = p
		}
	}
	add("/etc/passwd")
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				add(p)
			}
			return nil
		})
	}
	return m
}

func checkNoForeignInodes(t testing.TB, root string, forbidden map[[2]uint64]string) {
	t.Helper()
	_ = filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			if o, ok := forbidden[[2]uint64{st.Dev, st.Ino}]; ok {
				t.Errorf("%s is a hard link to %s outside the root", p, o)
			}
		}
		return nil
	})
}

type hostileCase struct {
	name    string
	entries func(out string) []tt.Entry
	wantErr error // class, nil for success
	check   func(t *testing.T, s sandbox, mode WhiteoutMode)
}

func hostileCases() []hostileCase {
	one := func(e tt.Entry) func(string) []tt.Entry { return func(string) []tt.Entry { return []tt.Entry{e} } }
	fileIs := func(rel, want string) func(*testing.T, sandbox, WhiteoutMode) {
		return func(t *testing.T, s sandbox, _ WhiteoutMode) {
			b, err := os.ReadFile(filepath.Join(s.root, rel))
			if err != nil || string(b) != want {
				t.Errorf("root/%s = %q, %v; want %q", rel, b, err, want)
			}
		}
	}
	return []hostileCase{
		{name: "dotdot file", entries: one(tt.File("../outside/passwd", "pwned")), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot new file", entries: one(tt.File("../x", "pwned")), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot nested", entries: one(tt.File("a/../../outside/passwd", "pwned")), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot dir chmod", entries: one(tt.Dir("../outside").Mode(0o777)), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot device", entries: one(tt.Char("../outside/null", 1, 3)), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot symlink", entries: one(tt.Symlink("../outside/passwd", "/x")), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot whiteout", entries: one(tt.Whiteout("..", "outside")), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot whiteout in sentinel", entries: one(tt.Whiteout("../outside", "passwd")), wantErr: errdefs.ErrInvalidArgument},
		{name: "dotdot opaque", entries: one(tt.Opaque("../outside")), wantErr: errdefs.ErrInvalidArgument},
		{
			name:    "absolute name into sentinel is clamped",
			entries: func(out string) []tt.Entry { return []tt.Entry{tt.File(out+"/passwd", "pwned")} },
			check: func(t *testing.T, s sandbox, m WhiteoutMode) {
				fileIs(strings.TrimPrefix(s.out, "/")+"/passwd", "pwned")(t, s, m)
			},
		},
		{
			name:    "absolute /etc name is clamped",
			entries: one(tt.File("/etc/shim-apply-test-x", "pwned")),
			check: func(t *testing.T, s sandbox, m WhiteoutMode) {
				fileIs("etc/shim-apply-test-x", "pwned")(t, s, m)
				if _, err := os.Lstat("/etc/shim-apply-test-x"); err == nil {
					os.Remove("/etc/shim-apply-test-x")
					t.Error("wrote /etc/shim-apply-test-x on the host")
				}
			},
		},
		{
			name: "symlink to / then file through it",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", "/"), tt.File("s"+out+"/passwd", "pwned")}
			},
			check: func(t *testing.T, s sandbox, m WhiteoutMode) {
				fileIs(strings.TrimPrefix(s.out, "/")+"/passwd", "pwned")(t, s, m)
			},
		},
		{
			name: "relative symlink escape then file",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", "../../../../../../../.."), tt.File("s"+out+"/passwd", "pwned")}
			},
		},
		{
			name: "symlink to sibling sentinel then file",
			entries: func(string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", "../outside"), tt.Dir("outside"), tt.File("s/passwd", "pwned")}
			},
			check: fileIs("outside/passwd", "pwned"),
		},
		{
			name: "symlink chain escape",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{
					tt.Symlink("a", "b"), tt.Symlink("b", "c/d"), tt.Dir("c"), tt.Symlink("c/d", "../../.."),
					tt.File("a"+out+"/passwd", "pwned"), tt.File("a/../outside/etc/shadow", "pwned"),
				}
			},
		},
		{
			name: "absolute symlink to sentinel then every entry type through it",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{
					tt.Symlink("s", out), tt.Dir(out),
					tt.File("s/passwd", "pwned"), tt.Dir("s/etc").Mode(0o777), tt.File("s/etc/shadow", "pwned"),
					tt.Fifo("s/fifo"), tt.Char("s/null", 1, 3), tt.Symlink("s/link", "/x"),
					tt.Link("s/hl", "s/passwd"), tt.Dir("s/d").Mode(0o700), tt.File("s/d/sub/f", "pwned"),
					tt.File("s/x", "").Xattr("user.pwned", "1"),
				}
			},
		},
		{
			name: "symlink as final component is replaced, not followed",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("passwd", out+"/passwd"), tt.File("passwd", "pwned")}
			},
			check: fileIs("passwd", "pwned"),
		},
		{
			name: "dir entry over symlink to sentinel",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", out), tt.Dir("s").Mode(0o700).Owner(1, 1)}
			},
			check: func(t *testing.T, s sandbox, _ WhiteoutMode) {
				if fi, err := os.Lstat(filepath.Join(s.root, "s")); err != nil || !fi.IsDir() {
					t.Errorf("root/s: %v, %v; want a directory", fi, err)
				}
			},
		},
		{
			name: "symlink to missing sentinel dir then file",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", out+"/newdir"), tt.File("s/x", "pwned")}
			},
			wantErr: errdefs.ErrInvalidArgument, // a dangling symlink is not a directory
		},
		{name: "hardlink to /etc/passwd", entries: one(tt.Link("h", "/etc/passwd")), wantErr: errdefs.ErrInvalidArgument},
		{name: "hardlink dotdot", entries: one(tt.Link("h", "../outside/passwd")), wantErr: errdefs.ErrInvalidArgument},
		{
			name:    "hardlink absolute to sentinel",
			entries: func(out string) []tt.Entry { return []tt.Entry{tt.Link("h", out+"/passwd")} },
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "hardlink through symlink to sentinel",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", out), tt.Link("h", "s/passwd")}
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "hardlink through dotdot symlink",
			entries: func(string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", "../outside"), tt.Link("h", "s/passwd")}
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "hardlink to symlink then write through it",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("l", out+"/passwd"), tt.Link("h", "l"), tt.File("h", "pwned")}
			},
			check: fileIs("h", "pwned"),
		},
		{
			name:    "hardlink to directory",
			entries: func(string) []tt.Entry { return []tt.Entry{tt.Dir("d"), tt.Link("h", "d")} },
			wantErr: errdefs.ErrInvalidArgument,
		},
		{name: "hardlink to itself", entries: one(tt.Link("h", "./h")), wantErr: errdefs.ErrInvalidArgument},
		{name: "whiteout .wh...", entries: one(tt.File(".wh...", "")), wantErr: errdefs.ErrInvalidArgument},
		{name: "whiteout .wh..", entries: one(tt.File(".wh..", "")), wantErr: errdefs.ErrInvalidArgument},
		{name: "whiteout .wh.", entries: one(tt.File("d/.wh.", "")), wantErr: errdefs.ErrInvalidArgument},
		{name: "whiteout .wh.../../x cleans to x", entries: one(tt.File(".wh.../../x", "x")), check: fileIs("x", "x")},
		{name: "whiteout .wh.../../../x escapes", entries: one(tt.File(".wh.../../../x", "x")), wantErr: errdefs.ErrInvalidArgument},
		{
			name: "whiteout through symlink to sentinel",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{
					tt.Symlink("s", out), tt.Dir(out), tt.File(out+"/passwd", "mine"), tt.Whiteout("s", "passwd"), tt.Whiteout("s", "d"),
					tt.Symlink("t", "../outside"), tt.Dir("outside"), tt.Whiteout("t", "etc"),
				}
			},
		},
		{
			name: "opaque through symlink to sentinel",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{
					tt.Symlink("s", out), tt.Dir(out), tt.Dir(out + "/d"), tt.File(out+"/d/f", "mine"),
					tt.Opaque("s"), tt.Opaque("s/d"),
					tt.Symlink("t", "../outside"), tt.Dir("outside"), tt.Opaque("t"),
				}
			},
		},
		{
			name: "whiteout of a symlink removes the link only",
			entries: func(out string) []tt.Entry {
				return []tt.Entry{tt.Symlink("s", out), tt.Whiteout("", "s")}
			},
		},
		{
			name:    "device through absolute name",
			entries: func(out string) []tt.Entry { return []tt.Entry{tt.Char(out+"/null", 1, 3), tt.Block(out+"/blk", 7, 0)} },
		},
		{name: "root entry as file", entries: one(tt.File(".", "x")), wantErr: errdefs.ErrInvalidArgument},
		{name: "dot entry as symlink", entries: one(tt.Symlink(".", "/")), wantErr: errdefs.ErrInvalidArgument},
		{name: "root dir entry changes root only", entries: one(tt.Dir("./").Mode(0o700))},
		{name: "name longer than PATH_MAX", entries: one(tt.File(strings.Repeat("a/", 2100)+"x", "")), wantErr: errdefs.ErrInvalidArgument},
		{name: "symlink target longer than PATH_MAX", entries: one(tt.Symlink("s", strings.Repeat("a", 5000))), wantErr: errdefs.ErrInvalidArgument},
		{
			name:    "file under a file",
			entries: func(string) []tt.Entry { return []tt.Entry{tt.File("f", "x"), tt.File("f/g", "y")} },
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name:    "symlink loop as parent",
			entries: func(string) []tt.Entry { return []tt.Entry{tt.Symlink("loop", "loop"), tt.File("loop/x", "y")} },
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name:    "dangling symlink as parent",
			entries: func(string) []tt.Entry { return []tt.Entry{tt.Symlink("s", "/nonexistent"), tt.File("s/x", "y")} },
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name:    "uid -1",
			entries: one(tt.File("f", "x").Owner(1<<32-1, 0).With(func(e *tt.Entry) { e.Format = tar.FormatPAX })),
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "overlay xattrs from the layer are ignored",
			entries: one(tt.Dir("d").Xattr("trusted.overlay.redirect", "/../../outside").
				Xattr("trusted.overlay.opaque", "y")),
			check: func(t *testing.T, s sandbox, _ WhiteoutMode) {
				var b [16]byte
				for _, n := range []string{"trusted.overlay.redirect", "trusted.overlay.opaque"} {
					if _, err := unix.Lgetxattr(filepath.Join(s.root, "d"), n, b[:]); err != unix.ENODATA {
						t.Errorf("%s on root/d: %v, want ENODATA", n, err)
					}
				}
			},
		},
		{
			name:    "unsupported entry type",
			entries: one(tt.File("v", "").With(func(e *tt.Entry) { e.Typeflag = 'V' })),
			wantErr: errdefs.ErrInvalidArgument,
		},
	}
}

func TestApplyHostile(t *testing.T) {
	requireRoot(t)
	for _, resolver := range []struct {
		name    string
		openat2 bool
	}{{"openat2", true}, {"securejoin", false}} {
		t.Run(resolver.name, func(t *testing.T) {
			defer fsutil.SetOpenat2ForTest(resolver.openat2)()
			for _, tc := range hostileCases() {
				for _, mode := range []WhiteoutMode{WhiteoutOverlay, WhiteoutRemove} {
					t.Run(fmt.Sprintf("%s/mode=%d", tc.name, mode), func(t *testing.T) {
						s := newSandbox(t)
						before := treeState(t, s.tmp, s.root)
						forbidden := forbiddenInodes(t, s.out)
						data := tt.Tar(tc.entries(s.out)...)
						_, err := Apply(context.Background(), s.root, bytes.NewReader(data), mode)
						if tc.wantErr == nil && err != nil {
							t.Fatalf("Apply: %v", err)
						}
						if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
							t.Fatalf("Apply error = %v, want class %v", err, tc.wantErr)
						}
						if d := diffState(before, treeState(t, s.tmp, s.root)); len(d) > 0 {
							t.Errorf("outside the root changed:\n%s", strings.Join(d, "\n"))
						}
						checkNoForeignInodes(t, s.root, forbidden)
						if tc.check != nil && err == nil {
							tc.check(t, s, mode)
						}
					})
				}
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{"a", "a", false},
		{"./a/b/", "a/b", false},
		{"/etc/passwd", "etc/passwd", false},
		{"//a//b", "a/b", false},
		{"a/../b", "b", false},
		{".", ".", false},
		{"/", ".", false},
		{"", ".", false},
		{".wh.../../x", "x", false},
		{"..", "", true},
		{"../a", "", true},
		{"a/../../b", "", true},
		{"/../etc", "", true},
		{"a/./../..", "", true},
		{"a\x00b", "", true},
		{strings.Repeat("a", maxPathLen+1), "", true},
	} {
		got, err := cleanName(tc.in)
		if tc.bad {
			if !errdefs.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("cleanName(%q) = %q, %v; want invalid argument", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func stat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func apply(t *testing.T, dir string, mode WhiteoutMode, entries ...tt.Entry) {
	t.Helper()
	if _, err := Apply(context.Background(), dir, bytes.NewReader(tt.Tar(entries...)), mode); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func TestApplyContent(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	mt := time.Date(2001, 2, 3, 4, 5, 6, 789000000, time.UTC)
	at := time.Date(2002, 3, 4, 5, 6, 7, 0, time.UTC)
	// VFS_CAP_REVISION_2, permitted CAP_NET_RAW: chown would clear it if
	// xattrs were set before ownership.
	capNetRaw := string([]byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	entries := []tt.Entry{
		tt.Dir("d").Mode(0o2750).Owner(1000, 1001).Time(mt, at).Xattr("user.dir", "dv"),
		tt.File("d/f", "hello").Mode(0o4755).Owner(1000, 1001).Time(mt, at).
			Xattr("user.a", "1").Xattr("security.capability", capNetRaw),
		tt.Link("d/hard", "d/f"),
		tt.Symlink("d/sym", "/no/where").Owner(1002, 1003).Time(mt, at),
		tt.Dir("tmp").Mode(0o1777),
		tt.Char("dev/null", 1, 3).Mode(0o666),
		tt.Block("dev/loop0", 7, 0).Mode(0o660).Owner(0, 6),
		tt.Fifo("run/fifo").Mode(0o600).Owner(5, 5),
		tt.File("implicit/parents/file", "x"),
	}
	data := append(tt.Tar(entries...), make([]byte, 4096)...) // trailing padding
	n, err := Apply(context.Background(), dir, bytes.NewReader(data), WhiteoutOverlay)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) {
		t.Errorf("Apply read %d bytes, want the whole stream %d", n, len(data))
	}

	d := stat(t, filepath.Join(dir, "d"))
	if d.Mode != unix.S_IFDIR|0o2750 || d.Uid != 1000 || d.Gid != 1001 {
		t.Errorf("d: mode %o owner %d:%d", d.Mode, d.Uid, d.Gid)
	}
	if d.Mtim.Sec != mt.Unix() || d.Mtim.Nsec != int64(mt.Nanosecond()) || d.Atim.Sec != at.Unix() {
		t.Errorf("d: times %v/%v were not set after its contents", d.Mtim, d.Atim)
	}
	f := stat(t, filepath.Join(dir, "d/f"))
	if f.Mode != unix.S_IFREG|0o4755 || f.Uid != 1000 || f.Gid != 1001 || f.Nlink != 2 || f.Size != 5 {
		t.Errorf("d/f: mode %o owner %d:%d nlink %d size %d", f.Mode, f.Uid, f.Gid, f.Nlink, f.Size)
	}
	if f.Mtim.Sec != mt.Unix() || f.Atim.Sec != at.Unix() {
		t.Errorf("d/f: times %v/%v", f.Mtim, f.Atim)
	}
	if h := stat(t, filepath.Join(dir, "d/hard")); h.Ino != f.Ino {
		t.Error("d/hard is not a hard link of d/f")
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d/f"), "user.a", buf); err != nil || string(buf[:n]) != "1" {
		t.Errorf("user.a = %q, %v", buf[:n], err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d/f"), "security.capability", buf); err != nil || string(buf[:n]) != capNetRaw {
		t.Errorf("security.capability = %x, %v (set before chown?)", buf[:n], err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d"), "user.dir", buf); err != nil || string(buf[:n]) != "dv" {
		t.Errorf("user.dir = %q, %v", buf[:n], err)
	}
	s := stat(t, filepath.Join(dir, "d/sym"))
	if l, _ := os.Readlink(filepath.Join(dir, "d/sym")); l != "/no/where" || s.Uid != 1002 || s.Gid != 1003 || s.Mtim.Sec != mt.Unix() {
		t.Errorf("d/sym -> %q owner %d:%d mtime %v", l, s.Uid, s.Gid, s.Mtim)
	}
	if st := stat(t, filepath.Join(dir, "tmp")); st.Mode != unix.S_IFDIR|0o1777 {
		t.Errorf("tmp mode %o", st.Mode)
	}
	if st := stat(t, filepath.Join(dir, "dev/null")); st.Mode != unix.S_IFCHR|0o666 || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("dev/null mode %o rdev %x", st.Mode, st.Rdev)
	}
	if st := stat(t, filepath.Join(dir, "dev/loop0")); st.Mode != unix.S_IFBLK|0o660 || st.Rdev != unix.Mkdev(7, 0) || st.Gid != 6 {
		t.Errorf("dev/loop0 mode %o rdev %x gid %d", st.Mode, st.Rdev, st.Gid)
	}
	if st := stat(t, filepath.Join(dir, "run/fifo")); st.Mode != unix.S_IFIFO|0o600 || st.Uid != 5 {
		t.Errorf("run/fifo mode %o uid %d", st.Mode, st.Uid)
	}
	if st := stat(t, filepath.Join(dir, "implicit/parents")); st.Mode != unix.S_IFDIR|0o755 {
		t.Errorf("implicit parent mode %o", st.Mode)
	}
}

func TestApplyReplaces(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	apply(t, dir, WhiteoutRemove, tt.File("x", "file"), tt.Dir("y"), tt.File("y/z", "z"), tt.Symlink("l", "/etc"), tt.Dir("keep"), tt.File("keep/a", "a"))
	apply(t, dir, WhiteoutRemove, tt.Dir("x"), tt.File("y", "now a file"), tt.File("l", "now a file"), tt.Dir("keep").Mode(0o700))
	if fi, err := os.Lstat(filepath.Join(dir, "x")); err != nil || !fi.IsDir() {
		t.Errorf("x: %v %v, want dir", fi, err)
	}
	for _, p := range []string{"y", "l"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != "now a file" {
			t.Errorf("%s = %q, %v", p, b, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep/a")); err != nil || string(b) != "a" {
		t.Errorf("directory entry over existing directory lost keep/a: %q %v", b, err)
	}
	if st := stat(t, filepath.Join(dir, "keep")); st.Mode&0o7777 != 0o700 {
		t.Errorf("keep mode %o, want 700", st.Mode&0o7777)
	}
}

func TestApplyWhiteoutOverlay(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	apply(t, dir, WhiteoutOverlay,
		tt.Whiteout("", "gone"),
		tt.Dir("d"), tt.Opaque("d"), tt.File("d/keep", "k"),
		tt.Whiteout("deep/er", "x"),
		tt.File(".wh..wh.plnk", ""), // aufs metadata: ignored
	)
	for _, p := range []string{"gone", "deep/er/x"} {
		st := stat(t, filepath.Join(dir, p))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0:0 char device", p, st.Mode, st.Rdev)
		}
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("d opaque xattr = %q, %v", buf[:n], err)
	}
	if _, err := os.Stat(filepath.Join(dir, "d/keep")); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, ".wh..wh.plnk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("aufs metadata entry was written: %v", err)
	}
}

func TestApplyWhiteoutRemove(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	// The parent layer, as a native snapshot's full copy would hold it.
	apply(t, dir, WhiteoutRemove,
		tt.File("a", "a"), tt.File("b", "b"),
		tt.Dir("d"), tt.File("d/x", "x"), tt.Dir("d/y"), tt.File("d/y/y", "y"),
		tt.Dir("e"), tt.Dir("e/sub"), tt.File("e/sub/old", "old"), tt.File("e/other", "o"),
		tt.Dir("f"), tt.File("f/1", "1"),
	)
	apply(t, dir, WhiteoutRemove,
		tt.Whiteout("", "a"),
		tt.Whiteout("", "missing"),          // nothing to hide: fine
		tt.Whiteout("no/such/dir", "x"),     // likewise
		tt.File("d/z", "z"), tt.Opaque("d"), // written before the marker: kept
		tt.File("d/w", "w"),
		tt.Dir("e/sub"), tt.Opaque("e"), tt.File("e/sub/new", "new"),
		tt.Opaque("f"),
	)
	want := map[string]bool{
		"a": false, "b": true,
		"d/x": false, "d/y": false, "d/z": true, "d/w": true,
		"e/sub": true, "e/sub/old": false, "e/sub/new": true, "e/other": false,
		"f": true, "f/1": false,
	}
	for p, exists := range want {
		_, err := os.Lstat(filepath.Join(dir, p))
		if exists && err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
		if !exists && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it removed", p, err)
		}
	}
}

// TestApplyFileSizes unpacks files of sizes about the copy buffer's and
// the writeback chunk's, read a byte at a time (as a decompressor returns
// less than asked), and a stream cut in the middle of a file.
func TestApplyFileSizes(t *testing.T) {
	requireRoot(t)
	sizes := []int{0, 1, copyBufferSize - 1, copyBufferSize, copyBufferSize + 1, 2*copyBufferSize + 17, writebackChunk + 3}
	var entries []tt.Entry
	want := map[string][]byte{}
	for i, size := range sizes {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(j*7 + i)
		}
		name := fmt.Sprintf("f%d", i)
		want[name] = b
		entries = append(entries, tt.File(name, string(b)))
	}
	dir := t.TempDir()
	if _, err := Apply(context.Background(), dir, iotest.OneByteReader(bytes.NewReader(tt.Tar(entries...))), WhiteoutOverlay); err != nil {
		t.Fatal(err)
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s: %d bytes, want %d, or other bytes", name, len(got), len(b))
		}
	}

	data := tt.Tar(tt.File("cut", string(make([]byte, copyBufferSize+100))))
	cut := data[:512+copyBufferSize+50] // the header, then part of the file
	if _, err := Apply(context.Background(), t.TempDir(), iotest.HalfReader(bytes.NewReader(cut)), WhiteoutOverlay); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Apply of a stream cut inside a file: %v, want unexpected EOF", err)
	}
}

func TestApplyCancel(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Apply(ctx, t.TempDir(), bytes.NewReader(tt.Tar(tt.File("a", "a"))), WhiteoutOverlay)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with cancelled context: %v", err)
	}
}

func TestApplyArgs(t *testing.T) {
	if _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(nil), 0); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("mode 0: %v", err)
	}
	if _, err := Apply(context.Background(), filepath.Join(t.TempDir(), "missing"), bytes.NewReader(nil), WhiteoutRemove); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing dir: %v", err)
	}
	if _, err := Apply(context.Background(), t.TempDir(), strings.NewReader(strings.Repeat("x", 1024)), WhiteoutRemove); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("garbage stream: %v", err)
	}
}

// TestApplyFlushList checks ApplyResult.Flush: every directory and
// regular file a layer of only those wrote, and nil for a layer an fsync
// per entry cannot cover or that has too many entries.
func TestApplyFlushList(t *testing.T) {
	requireRoot(t)
	many := []tt.Entry{}
	for i := range MaxFlushEntries {
		many = append(many, tt.File(fmt.Sprintf("f%d", i), "x"))
	}
	fewer := many[:MaxFlushEntries-1]
	// A directory with an entry of its own and files in it counts once.
	underDir := []tt.Entry{tt.Dir("d")}
	for i := range MaxFlushEntries - 2 {
		underDir = append(underDir, tt.File(fmt.Sprintf("d/f%d", i), "x"))
	}
	var opaques []tt.Entry
	for i := range MaxFlushEntries {
		opaques = append(opaques, tt.Opaque(fmt.Sprintf("o%d", i)))
	}
	for _, c := range []struct {
		name    string
		mode    WhiteoutMode
		entries []tt.Entry
		want    []string
	}{
		{"files and dirs", WhiteoutOverlay, []tt.Entry{
			tt.Dir("etc"), tt.File("etc/os-release", "ID=x\n"), tt.File("usr/lib/x/big", "data"),
			tt.Dir("empty"), tt.Opaque("etc"),
		}, []string{".", "empty", "etc", "usr", "usr/lib", "usr/lib/x", "etc/os-release", "usr/lib/x/big"}},
		{"a file replaced by a directory", WhiteoutOverlay, []tt.Entry{tt.File("a", "x"), tt.Dir("a"), tt.File("a/b", "y")},
			[]string{".", "a", "a/b"}},
		{"root entry", WhiteoutOverlay, []tt.Entry{tt.Dir("."), tt.File("f", "x")}, []string{".", "f"}},
		{"empty layer", WhiteoutOverlay, nil, []string{"."}},
		{"largest listed", WhiteoutOverlay, fewer, nil}, // filled in below
		{"too many", WhiteoutOverlay, many, nil},
		{"listed directory with files", WhiteoutOverlay, underDir, nil}, // filled in below
		{"too many opaque directories", WhiteoutOverlay, opaques, nil},
		{"symlink", WhiteoutOverlay, []tt.Entry{tt.File("f", "x"), tt.Symlink("l", "f")}, nil},
		{"hard link", WhiteoutOverlay, []tt.Entry{tt.File("f", "x"), tt.Link("l", "f")}, nil},
		{"fifo", WhiteoutOverlay, []tt.Entry{tt.Fifo("p")}, nil},
		{"whiteout", WhiteoutOverlay, []tt.Entry{tt.File("f", "x"), tt.Whiteout("", "gone")}, nil},
		{"whiteout remove mode", WhiteoutRemove, []tt.Entry{tt.File("f", "x")}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "largest listed" {
				c.want = []string{"."}
				for i := range MaxFlushEntries - 1 {
					c.want = append(c.want, fmt.Sprintf("f%d", i))
				}
				sort.Strings(c.want[1:])
			}
			if c.name == "listed directory with files" {
				c.want = []string{".", "d"}
				for i := range MaxFlushEntries - 2 {
					c.want = append(c.want, fmt.Sprintf("d/f%d", i))
				}
				sort.Strings(c.want[2:])
			}
			dir := t.TempDir()
			res, err := ApplyLayer(context.Background(), dir, bytes.NewReader(tt.Tar(c.entries...)), c.mode)
			if err != nil {
				t.Fatal(err)
			}
			checkFlushCovers(t, dir, res)
			if !slices.Equal(res.Flush, c.want) {
				t.Errorf("Flush = %q, want %q", res.Flush, c.want)
			}
			if (res.Flush == nil) != (c.want == nil) {
				t.Errorf("Flush nil = %v, want %v", res.Flush == nil, c.want == nil)
			}
		})
	}
}

// checkFlushCovers fails unless res.Flush, when it lists entries, lists
// every file and directory in dir and dir holds nothing else.
func checkFlushCovers(t testing.TB, dir string, res ApplyResult) {
	t.Helper()
	if res.Flush == nil {
		return
	}
	listed := map[string]bool{}
	for _, n := range res.Flush {
		listed[n] = true
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		switch {
		case !d.Type().IsRegular() && !d.IsDir():
			t.Errorf("Flush lists entries, but the layer wrote %s of type %v", rel, d.Type())
		case !listed[filepath.ToSlash(rel)]:
			t.Errorf("Flush does not list %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
