package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
	tt "github.com/shim-cri/shim/pkg/snapshot/internal/tartest"
)

// TestCopy checks Copy preserves everything a layer can hold.
func TestCopy(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o750); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2005, 6, 7, 8, 9, 10, 123456789, time.UTC)
	big := string(bytes.Repeat([]byte("0123456789abcdef"), 300000)) // > copy_file_range chunks of the read loop
	layer := tt.Tar(
		tt.Dir("d").Mode(0o2751).Owner(7, 8).Time(mt, mt).Xattr("user.d", "dv"),
		tt.File("d/suid", "s").Mode(0o4755).Owner(0, 9).Time(mt, mt).Xattr("user.f", "fv"),
		tt.File("big", big),
		tt.File("empty", ""),
		tt.Link("d/hard", "d/suid"),
		tt.Link("hard2", "d/suid"),
		tt.Symlink("sym", "../../etc/passwd").Owner(5, 6).Time(mt, mt),
		tt.Char("null", 1, 3).Mode(0o666).Time(mt, mt),
		tt.Block("loop", 7, 1).Mode(0o600),
		tt.Fifo("fifo").Mode(0o640).Owner(3, 3),
		tt.Dir("sticky").Mode(0o1777),
	)
	if _, err := Apply(ctx, src, bytes.NewReader(layer), WhiteoutRemove); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(src, "sock"), unix.S_IFSOCK|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNano(src, []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if err := Copy(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	want, got := describe(t, src), describe(t, dst)
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s:\n src %s\n dst %s", p, w, got[p])
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("extra %s in copy", p)
		}
	}
	// Reading the source moves its atimes; a device node's stays put.
	var null unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "null"), &null); err != nil || null.Atim.Sec != mt.Unix() {
		t.Errorf("null atime %d, %v; want %d", null.Atim.Sec, err, mt.Unix())
	}
	var a, b, c unix.Stat_t
	_ = unix.Lstat(filepath.Join(dst, "d/suid"), &a)
	_ = unix.Lstat(filepath.Join(dst, "d/hard"), &b)
	_ = unix.Lstat(filepath.Join(dst, "hard2"), &c)
	if a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3 {
		t.Errorf("hard links not preserved: inodes %d %d %d nlink %d", a.Ino, b.Ino, c.Ino, a.Nlink)
	}
	if err := Copy(ctx, src, dst); err == nil {
		t.Error("Copy onto an existing destination succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Copy(cctx, src, filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("Copy with a cancelled context succeeded")
	}
}

// describe maps each path below root to its metadata (not its inode or
// atime, which reading moves).
func describe(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		d := describeStat(&st)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			d += fmt.Sprintf(" data=%d:%q", len(b), b[:min(len(b), 32)])
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			l, _ := os.Readlink(p)
			d += " link=" + l
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
		for _, k := range []string{"user.d", "user.f"} {
			if v, ok := xa[k]; ok {
				d += " " + k + "=" + string(v)
			}
		}
		out[rel] = d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func describeStat(st *unix.Stat_t) string {
	return fmt.Sprintf("mode=%o uid=%d gid=%d nlink=%d rdev=%d size=%d mtime=%d.%d",
		st.Mode, st.Uid, st.Gid, st.Nlink, st.Rdev, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
}
