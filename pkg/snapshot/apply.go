package snapshot

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"
)

// Limits on image-supplied tar metadata. archive/tar itself caps PAX and
// GNU long-name headers at 1 MiB.
const (
	maxPathLen     = 4096      // PATH_MAX: longer names or link targets are rejected
	maxXattrs      = 128       // extended attributes per entry
	maxXattrSize   = 64 << 10  // XATTR_SIZE_MAX
	maxID          = 1<<32 - 2 // (uid_t)-1 means "unchanged" to chown(2): never valid
	copyBufferSize = 128 << 10
)

// OCI whiteout names.
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	whiteoutOpaque     = ".wh..wh..opq"

	overlayOpaqueXattr = "trusted.overlay.opaque"
	xattrPAXPrefix     = "SCHILY.xattr."
)

// Apply extracts the uncompressed OCI layer tar read from r into the
// directory dir and returns the number of bytes read from r (the whole
// stream: trailing padding after the end-of-archive marker is read too, so a
// digest computed over r covers the full blob).
//
// Whiteouts are written as mode says: WhiteoutOverlay makes ".wh.x" a 0:0
// character device "x" and ".wh..wh..opq" the trusted.overlay.opaque=y xattr
// on its directory; WhiteoutRemove deletes "x", and for ".wh..wh..opq"
// deletes every entry of the directory that this layer did not itself write
// (dir is expected to be a full copy of the parent).
//
// Every path is resolved inside dir by file descriptor for each entry
// (openat2 RESOLVE_IN_ROOT; nothing resolved is reused across entries), so
// symlinks in the layer, wherever they point, are followed as if dir were
// "/" and nothing is ever created, changed or removed outside dir. Names are
// taken relative to dir even when absolute; a name or hardlink target whose
// ".." components climb above the root, an unsupported entry type or an
// oversized name fails with an error wrapping errdefs.ErrInvalidArgument.
// A failed Apply leaves dir partially written; callers discard it.
//
// xattrs from PAX records (SCHILY.xattr.*) are set; ones the host refuses
// (security.* without privilege, user.* on symlinks, ...) are skipped with a
// debug log, and trusted.overlay.* from the tar is never honoured, since it
// would steer overlayfs. ctx is checked between entries and while copying
// file data.
func Apply(ctx context.Context, dir string, r io.Reader, mode WhiteoutMode) (int64, error) {
	res, err := ApplyLayer(ctx, dir, r, mode)
	return res.Bytes, err
}

// ApplyResult describes an applied layer.
type ApplyResult struct {
	Bytes int64 // tar bytes read
	// Implicit lists the directories the layer has files in but no entry
	// for ("." for the layer root), which Apply created with default
	// owner and mode. Unpacked without its parent (WhiteoutOverlay), such
	// a directory must take its attributes from the parent chain:
	// snapshot.WithInheritDirs at Commit does that.
	Implicit []string
	// Flush lists everything the layer wrote ("." first, then its other
	// directories, then its regular files; names as in Implicit) when
	// that is all of it and no more than MaxFlushEntries: fsyncing each
	// (Snapshotter.SyncEntries) makes the layer durable without flushing
	// the whole filesystem, and so without waiting for every other
	// writer's data on it. nil for a layer with any other entry (a
	// symlink, hard link, device node, fifo or whiteout file: an fsync
	// cannot reach each of them), with more entries, or applied with
	// WhiteoutRemove (whose removals reach into the copied parent).
	Flush []string
}

// MaxFlushEntries is the most entries ApplyResult.Flush lists: an fsync
// per entry costs about 0.1 ms for a small file not yet written back
// (5000 of them: 370-540 ms, one syncfs 65-80 ms here), so a layer of many
// small files is flushed with the filesystem instead.
const MaxFlushEntries = 64

// maxLayerEntries caps the entries of one layer (a small compressed layer
// can hold millions of headers).
const maxLayerEntries = 4 << 20

// copyBuffers hold the buffers layers are copied through: a pull unpacks
// several layers at once, and a new buffer for each would cost a garbage
// collection every few layers.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// ApplyLayer is Apply, also reporting the implicit directories.
func ApplyLayer(ctx context.Context, dir string, r io.Reader, mode WhiteoutMode) (ApplyResult, error) {
	if mode != WhiteoutOverlay && mode != WhiteoutRemove {
		return ApplyResult{}, fmt.Errorf("apply: whiteout mode %d: %w", mode, errdefs.ErrInvalidArgument)
	}
	rootfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ApplyResult{}, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(rootfd)

	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	a := &applier{ctx: ctx, root: rootfd, mode: mode, buf: *buf,
		explicit: map[string]bool{}, parents: map[string]bool{}}
	if mode == WhiteoutRemove {
		a.written = make(map[string]struct{})
	} else {
		a.files = make(map[string]struct{})
	}
	n, implicit, err := a.applyTar(r)
	if err != nil {
		return ApplyResult{Bytes: n}, err
	}
	return ApplyResult{Bytes: n, Implicit: implicit, Flush: a.flushList()}, nil
}

// flushList is ApplyResult.Flush.
func (a *applier) flushList() []string {
	if a.files == nil {
		return nil
	}
	dirs := make([]string, 0, len(a.parents)+len(a.explicit))
	for d := range a.parents {
		dirs = append(dirs, d)
	}
	for d := range a.explicit {
		if !a.parents[d] && d != "." {
			dirs = append(dirs, d)
		}
	}
	files := make([]string, 0, len(a.files))
	for f := range a.files {
		if !a.explicit[f] && !a.parents[f] {
			files = append(files, f)
		}
	}
	sort.Strings(dirs)
	sort.Strings(files)
	out := append([]string{"."}, dirs...)
	return append(out, files...)
}

// notFlushable records an entry ApplyResult.Flush cannot cover.
func (a *applier) notFlushable() { a.files = nil }

func (a *applier) applyTar(r io.Reader) (int64, []string, error) {
	ctx := a.ctx
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	for entries := 0; ; entries++ {
		if err := ctx.Err(); err != nil {
			return cr.n, nil, err
		}
		if entries > maxLayerEntries {
			return cr.n, nil, fmt.Errorf("apply: more than %d entries: %w", maxLayerEntries, errdefs.ErrInvalidArgument)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// ErrInsecurePath (GODEBUG=tarinsecurepath=0) comes with a
		// usable header: the name checks below are ours.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			if errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) {
				err = fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
			}
			return cr.n, nil, fmt.Errorf("apply: read layer: %w", err)
		}
		if err := a.entry(tr, hdr); err != nil {
			return cr.n, nil, fmt.Errorf("apply %q: %w", hdr.Name, err)
		}
	}
	if err := a.setDirTimes(); err != nil {
		return cr.n, nil, fmt.Errorf("apply: %w", err)
	}
	if _, err := io.CopyBuffer(io.Discard, ctxReader{ctx, cr}, a.buf); err != nil {
		return cr.n, nil, fmt.Errorf("apply: read trailing data: %w", err)
	}
	var implicit []string
	if !a.explicit["."] {
		implicit = append(implicit, ".")
	}
	for d := range a.parents {
		if !a.explicit[d] {
			implicit = append(implicit, d)
		}
	}
	sort.Strings(implicit)
	return cr.n, implicit, nil
}

type dirTime struct {
	name string
	ts   []unix.Timespec
}

type applier struct {
	ctx     context.Context
	root    int
	mode    WhiteoutMode
	buf     []byte
	written map[string]struct{} // names this layer wrote (WhiteoutRemove only)
	files   map[string]struct{} // regular files written, while ApplyResult.Flush can list all (nil once it cannot)
	dirs    []dirTime           // directory times, set after all entries

	explicit map[string]bool // directories the layer has an entry for
	parents  map[string]bool // directories the layer's entries are in
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

// layerError marks errors caused by the layer's content (a parent that is
// not a directory, a missing link target, ...) as invalid arguments, leaving
// host errors (ENOSPC, EIO, ...) unclassified.
func layerError(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []error{unix.ENOTDIR, unix.ENOENT, unix.ELOOP, unix.ENAMETOOLONG, unix.EXDEV, unix.EISDIR} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		}
	}
	return err
}

// cleanName turns a tar name into a clean path relative to the root ("."
// for the root itself). Leading slashes are dropped (names are always
// relative to the layer root); ".." that would climb above the root is
// rejected.
func cleanName(name string) (string, error) {
	if len(name) > maxPathLen {
		return "", invalid("name of %d bytes", len(name))
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", invalid("name contains NUL")
	}
	depth := 0
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth == 0 {
				return "", invalid("name %q escapes the layer root", name)
			}
			depth--
		default:
			depth++
		}
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return ".", nil
	}
	return p[1:], nil
}

func splitName(name string) (dir, base string) {
	dir, base = path.Split(name)
	return strings.TrimSuffix(dir, "/"), base
}

func (a *applier) entry(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo,
		tar.TypeCont, '\x00':
	default:
		return invalid("unsupported tar entry type %q", hdr.Typeflag)
	}
	if hdr.Typeflag == tar.TypeGNUSparse || hasSparseRecords(hdr) {
		// Holes read back as zeros: a few KiB of tar could claim (and
		// allocate) terabytes. OCI layers are never sparse.
		return invalid("sparse entries are not supported")
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		a.explicit[name] = true
	}
	for d := path.Dir(name); d != "." && d != "/" && !a.parents[d]; d = path.Dir(d) {
		a.parents[d] = true
	}
	a.checkFlushCap()
	if hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID {
		return invalid("owner %d:%d out of range", hdr.Uid, hdr.Gid)
	}
	dir, base := splitName(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(dir, base, hdr)
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return invalid("layer root entry of type %q is not a directory", hdr.Typeflag)
		}
		return a.dir(a.root, ".", ".", hdr)
	}
	pfd, err := fsutil.MkdirAllInRoot(a.root, dir, 0o755)
	if err != nil {
		return layerError(err)
	}
	defer unix.Close(pfd)

	switch hdr.Typeflag {
	case tar.TypeDir:
		err = a.dir(pfd, name, base, hdr)
	case tar.TypeSymlink:
		err = a.symlink(pfd, base, hdr)
	case tar.TypeLink:
		err = a.hardlink(pfd, name, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = a.node(pfd, base, hdr)
	default:
		err = a.file(pfd, base, hdr, tr)
	}
	if err != nil {
		return layerError(err)
	}
	if a.written != nil {
		a.written[name] = struct{}{}
	}
	if a.files != nil {
		switch hdr.Typeflag {
		case tar.TypeDir:
		case tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			a.notFlushable()
		default:
			a.files[name] = struct{}{}
			a.checkFlushCap()
		}
	}
	return nil
}

// checkFlushCap gives up listing the layer's entries once they are more
// than MaxFlushEntries, "." included (a name both a file and a directory
// counts twice).
func (a *applier) checkFlushCap() {
	if a.files == nil {
		return
	}
	n := 1 + len(a.files) + len(a.parents)
	for d := range a.explicit {
		if !a.parents[d] && d != "." {
			n++
		}
	}
	if n > MaxFlushEntries {
		a.notFlushable()
	}
}

func hasSparseRecords(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// clearEntry removes whatever is at base in pfd so a new entry can be created
// there; an existing directory is kept when keepDir is set (a directory
// entry for an existing directory only updates its metadata). It reports
// whether a directory was kept.
func clearEntry(pfd int, base string, keepDir bool) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "fstatat", Path: base, Err: err}
	}
	if keepDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return true, nil
	}
	return false, fsutil.RemoveAllAt(pfd, base)
}

func (a *applier) dir(pfd int, name, base string, hdr *tar.Header) error {
	kept, err := clearEntry(pfd, base, true)
	if err != nil {
		return err
	}
	if !kept {
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return &os.PathError{Op: "mkdirat", Path: base, Err: err}
		}
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: base, Err: err}
	}
	defer unix.Close(fd)
	if err := a.ownerModeFd(fd, hdr); err != nil {
		return err
	}
	if err := a.xattrs(hdr, func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) }); err != nil {
		return err
	}
	a.dirs = append(a.dirs, dirTime{name: name, ts: times(hdr)})
	return nil
}

func (a *applier) file(pfd int, base string, hdr *tar.Header, tr *tar.Reader) error {
	if _, err := clearEntry(pfd, base, false); err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: base, Err: err}
	}
	f := os.NewFile(uintptr(fd), base)
	wb := -1
	if hdr.Size >= writebackMin {
		wb = fd
	}
	err = a.copyData(f, tr, wb)
	if err == nil {
		err = a.ownerModeFd(fd, hdr)
	}
	if err == nil {
		err = a.xattrs(hdr, func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) })
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return setTimes(pfd, base, times(hdr))
}

// writebackMin is the file size from which Apply starts a file's
// writeback while writing it (every writebackChunk, and at its end).
const writebackMin = 64 << 10

// writebackChunk is how much of a file Apply writes before starting its
// writeback.
const writebackChunk = 1 << 20

// copyData copies r into f. With writeback (f's descriptor, else -1) it
// starts writing the data back every writebackChunk, not waiting, so the
// flush that makes the layer durable later finds little left to do. It
// writes a full buffer at a time: decompressors return at most their
// window (32 KiB for gzip) a read, and each write is a system call that
// may hand the Go scheduler's processor to another thread.
func (a *applier) copyData(f *os.File, r io.Reader, writeback int) error {
	var written, started int64
	for {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		n, rerr := fill(r, a.buf)
		if n > 0 {
			if _, err := f.Write(a.buf[:n]); err != nil {
				return err
			}
			written += int64(n)
		}
		if writeback >= 0 && (written-started >= writebackChunk || rerr == io.EOF && written > started) {
			unix.SyncFileRange(writeback, started, written-started, unix.SYNC_FILE_RANGE_WRITE)
			started = written
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// fill reads r into b until b is full or r fails (io.EOF at its end).
// Not io.ReadFull: it turns an EOF after some bytes into
// io.ErrUnexpectedEOF, which is also what a tar reader returns for a
// stream cut inside a file, and the two must not be told apart by value.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (a *applier) symlink(pfd int, base string, hdr *tar.Header) error {
	if hdr.Linkname == "" || len(hdr.Linkname) > maxPathLen || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return invalid("symlink target of %d bytes", len(hdr.Linkname))
	}
	if _, err := clearEntry(pfd, base, false); err != nil {
		return err
	}
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return &os.PathError{Op: "symlinkat", Path: base, Err: err}
	}
	return a.nodeMeta(pfd, base, hdr, false)
}

// nodeMeta sets owner, (unless symlink) mode, xattrs and times of an entry
// that cannot be opened safely (symlinks, devices, fifos).
func (a *applier) nodeMeta(pfd int, base string, hdr *tar.Header, chmod bool) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lchown", Path: base, Err: err}
	}
	if chmod {
		// base is the node just created by mknodat in a directory only
		// this applier writes: it is not a symlink.
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return &os.PathError{Op: "chmod", Path: base, Err: err}
		}
	}
	if err := a.xattrs(hdr, func(n string, v []byte) error { return fsutil.Lsetxattr(pfd, base, n, v) }); err != nil {
		return err
	}
	return setTimes(pfd, base, times(hdr))
}

func (a *applier) hardlink(pfd int, name, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if target == "." || target == name {
		return invalid("hardlink to %q", hdr.Linkname)
	}
	tdir, tbase := splitName(target)
	tfd, err := fsutil.OpenDirInRoot(a.root, tdir)
	if err != nil {
		return invalid("hardlink target %q: %v", hdr.Linkname, err)
	}
	defer unix.Close(tfd)
	if _, err := clearEntry(pfd, base, false); err != nil {
		return err
	}
	// No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return invalid("hardlink to %q: %v", hdr.Linkname, err)
	}
	return nil
}

func (a *applier) node(pfd int, base string, hdr *tar.Header) error {
	var typ uint32
	switch hdr.Typeflag {
	case tar.TypeChar:
		typ = unix.S_IFCHR
	case tar.TypeBlock:
		typ = unix.S_IFBLK
	default:
		typ = unix.S_IFIFO
	}
	if hdr.Devmajor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor < 0 || hdr.Devminor > 0xfffff {
		return invalid("device %d:%d out of range", hdr.Devmajor, hdr.Devminor)
	}
	if _, err := clearEntry(pfd, base, false); err != nil {
		return err
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, base, typ|uint32(hdr.Mode&0o7777), int(dev)); err != nil {
		return &os.PathError{Op: "mknodat", Path: base, Err: err}
	}
	return a.nodeMeta(pfd, base, hdr, true)
}

func (a *applier) ownerModeFd(fd int, hdr *tar.Header) error {
	// chown first: it clears setuid/setgid, which the chmod restores.
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown %s: %w", hdr.Name, err)
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return fmt.Errorf("chmod %s: %w", hdr.Name, err)
	}
	return nil
}

// xattrs sets the entry's SCHILY.xattr.* PAX records, in name order, with
// set. It runs after chown, which would clear security.capability.
func (a *applier) xattrs(hdr *tar.Header, set func(name string, value []byte) error) error {
	var names []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPAXPrefix) {
			names = append(names, k[len(xattrPAXPrefix):])
		}
	}
	if len(names) == 0 {
		return nil
	}
	if len(names) > maxXattrs {
		return invalid("%d xattrs", len(names))
	}
	sort.Strings(names)
	for _, n := range names {
		v := hdr.PAXRecords[xattrPAXPrefix+n]
		if len(v) > maxXattrSize {
			return invalid("xattr %q of %d bytes", n, len(v))
		}
		if strings.HasPrefix(n, "trusted.overlay.") {
			log.G(a.ctx).WithField("xattr", n).WithField("path", hdr.Name).Debug("apply: ignoring overlayfs xattr from layer")
			continue
		}
		err := set(n, []byte(v))
		switch {
		case err == nil:
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EACCES), errors.Is(err, unix.EINVAL):
			log.G(a.ctx).WithField("xattr", n).WithField("path", hdr.Name).WithError(err).Debug("apply: host refused xattr, skipping")
		default:
			return fmt.Errorf("set xattr %q: %w", n, err)
		}
	}
	return nil
}

func (a *applier) whiteout(dir, base string, hdr *tar.Header) error {
	if base == whiteoutOpaque {
		return layerError(a.opaque(dir))
	}
	if strings.HasPrefix(base, whiteoutMetaPrefix) {
		// aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
		log.G(a.ctx).WithField("path", hdr.Name).Debug("apply: skipping aufs metadata entry")
		return nil
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return invalid("whiteout %q names no entry", base)
	}
	a.notFlushable()
	if a.mode == WhiteoutRemove {
		pfd, err := fsutil.OpenDirInRoot(a.root, dir)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil // nothing below to hide
		}
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		return fsutil.RemoveAllAt(pfd, target)
	}
	pfd, err := fsutil.MkdirAllInRoot(a.root, dir, 0o755)
	if err != nil {
		return layerError(err)
	}
	defer unix.Close(pfd)
	if _, err := clearEntry(pfd, target, false); err != nil {
		return err
	}
	if err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0); err != nil {
		return &os.PathError{Op: "mknod whiteout", Path: target, Err: err}
	}
	if err := unix.Fchownat(pfd, target, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lchown", Path: target, Err: err}
	}
	return nil
}

// opaque handles ".wh..wh..opq" in dir.
func (a *applier) opaque(dir string) error {
	if a.mode == WhiteoutOverlay {
		fd, err := fsutil.MkdirAllInRoot(a.root, dir, 0o755)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Fsetxattr(fd, overlayOpaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("set %s on %q: %w", overlayOpaqueXattr, dir, err)
		}
		return nil
	}
	fd, err := fsutil.OpenDirInRoot(a.root, dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if dir == "" {
		dir = "."
	}
	return a.removeLower(fd, dir)
}

// removeLower deletes the entries of directory fd (named dir) that this
// layer did not write, recursing into directories it did write.
func (a *applier) removeLower(fd int, dir string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if _, ok := a.written[p]; !ok {
			if err := fsutil.RemoveAllAt(fd, n); err != nil {
				return err
			}
			continue
		}
		cfd, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "openat", Path: p, Err: err}
		}
		err = a.removeLower(cfd, p)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

func readDirNames(fd int) ([]string, error) {
	d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(d), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// setDirTimes sets the times of the directories the layer listed, now that
// nothing more is written into them. Each is looked up afresh in the root.
func (a *applier) setDirTimes() error {
	for _, d := range a.dirs {
		if d.name == "." {
			if err := unix.UtimesNanoAt(a.root, ".", d.ts, 0); err != nil {
				return &os.PathError{Op: "utimensat", Path: ".", Err: err}
			}
			continue
		}
		dir, base := splitName(d.name)
		pfd, err := fsutil.OpenDirInRoot(a.root, dir)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue // removed by a later entry
		}
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = setTimes(pfd, base, d.ts)
		}
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

func times(hdr *tar.Header) []unix.Timespec {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return []unix.Timespec{timespec(at), timespec(hdr.ModTime)}
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func setTimes(pfd int, base string, ts []unix.Timespec) error {
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: base, Err: err}
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
