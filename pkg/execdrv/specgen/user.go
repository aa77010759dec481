package specgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
)

// MaxIDFileSize caps the /etc/passwd and /etc/group read from an image.
const MaxIDFileSize = 4 << 20

type userRequest struct {
	runAsUser, runAsGroup *runtimeapi.Int64Value
	username              string
	imageUser             string // "", "uid", "name", "uid:gid", "name:group", ...
	groups                []int64
	strict                bool // SupplementalGroupsPolicy Strict
	// podLevel: the pod's security context, where kubelet sends a
	// runAsGroup without a runAsUser; the group then applies to the
	// image's user. (A container's never comes alone from kubelet, and
	// critest wants it refused.)
	podLevel bool
}

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// parseID parses a numeric uid or gid. ok is false when s is not all
// digits (a name); a number that does not fit an id is an error, never a
// name. 4294967295 is (uid_t)-1 and is refused too.
func parseID(what, s string) (id uint32, ok bool, err error) {
	if s == "" {
		return 0, false, nil
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n >= math.MaxUint32 {
		return 0, true, inval("%s %q is out of range", what, s)
	}
	return uint32(n), true, nil
}

func checkID64(what string, v int64) (uint32, error) {
	if v < 0 || v >= math.MaxUint32 {
		return 0, inval("%s %d is out of range", what, v)
	}
	return uint32(v), nil
}

// resolveUser computes the process user: uid from run_as_user, else
// run_as_username, else the image USER; gid from run_as_group, else the
// group of the image USER (when it gave the user too), else the passwd
// entry's primary group, else 0. The supplemental groups start with the
// primary gid, then (policy Merge) the groups of /etc/group listing the user
// as a member, then security_context.supplemental_groups.
func resolveUser(rootfs string, r userRequest) (specs.User, error) {
	var u specs.User
	userStr, groupStr := r.imageUser, ""
	if i := strings.IndexByte(userStr, ':'); i >= 0 {
		userStr, groupStr = userStr[:i], userStr[i+1:]
	}
	switch {
	case r.runAsUser != nil:
		uid, err := checkID64("run_as_user", r.runAsUser.GetValue())
		if err != nil {
			return u, err
		}
		userStr, groupStr = strconv.FormatUint(uint64(uid), 10), ""
	case r.username != "":
		userStr, groupStr = r.username, ""
	case r.runAsGroup != nil && !r.podLevel:
		return u, inval("run_as_group is set without run_as_user or run_as_username")
	}
	if userStr == "" {
		userStr = "0"
	}
	files := idFiles{root: rootfs}

	uid, numeric, err := parseID("user", userStr)
	if err != nil {
		return u, err
	}
	var entry *passwdEntry
	if numeric {
		if entry, err = files.userByID(uid); err != nil {
			return u, err
		}
	} else {
		if err := checkName("user", userStr); err != nil {
			return u, err
		}
		if entry, err = files.userByName(userStr); err != nil {
			return u, err
		}
		if entry == nil {
			return u, fmt.Errorf("user %q not found in the image's /etc/passwd: %w", userStr, errdefs.ErrNotFound)
		}
		uid = entry.uid
	}
	u.UID = uid

	switch {
	case r.runAsGroup != nil:
		if u.GID, err = checkID64("run_as_group", r.runAsGroup.GetValue()); err != nil {
			return u, err
		}
	case groupStr != "":
		gid, numeric, err := parseID("group", groupStr)
		if err != nil {
			return u, err
		}
		if !numeric {
			if err := checkName("group", groupStr); err != nil {
				return u, err
			}
			g, err := files.groupByName(groupStr)
			if err != nil {
				return u, err
			}
			if g == nil {
				return u, fmt.Errorf("group %q not found in the image's /etc/group: %w", groupStr, errdefs.ErrNotFound)
			}
			gid = g.gid
		}
		u.GID = gid
	case entry != nil:
		u.GID = entry.gid
	}

	gids := []uint32{u.GID}
	seen := map[uint32]bool{u.GID: true}
	add := func(g uint32) {
		if !seen[g] {
			seen[g] = true
			gids = append(gids, g)
		}
	}
	if !r.strict && entry != nil {
		member, err := files.groupsOf(entry.name)
		if err != nil {
			return u, err
		}
		for _, g := range member {
			add(g)
		}
	}
	for _, g := range r.groups {
		gid, err := checkID64("supplemental group", g)
		if err != nil {
			return u, err
		}
		add(gid)
	}
	u.AdditionalGids = gids
	return u, nil
}

func checkName(what, s string) error {
	if len(s) > 256 || strings.ContainsAny(s, ":/\n\x00") || strings.HasPrefix(s, "-") {
		return inval("%s name %q", what, s)
	}
	return nil
}

// idFiles reads /etc/passwd and /etc/group inside root once each.
type idFiles struct {
	root         string
	passwd       []passwdEntry
	group        []groupEntry
	readP, readG bool
	errP, errG   error
}

func (f *idFiles) loadPasswd() ([]passwdEntry, error) {
	if !f.readP {
		f.readP = true
		var b []byte
		if b, f.errP = readInRoot(f.root, "/etc/passwd"); f.errP == nil {
			f.passwd = parsePasswd(b)
		}
	}
	return f.passwd, f.errP
}

func (f *idFiles) loadGroup() ([]groupEntry, error) {
	if !f.readG {
		f.readG = true
		var b []byte
		if b, f.errG = readInRoot(f.root, "/etc/group"); f.errG == nil {
			f.group = parseGroup(b)
		}
	}
	return f.group, f.errG
}

func (f *idFiles) userByID(uid uint32) (*passwdEntry, error) {
	p, err := f.loadPasswd()
	if err != nil {
		return nil, err
	}
	for i := range p {
		if p[i].uid == uid {
			return &p[i], nil
		}
	}
	return nil, nil
}

func (f *idFiles) userByName(name string) (*passwdEntry, error) {
	p, err := f.loadPasswd()
	if err != nil {
		return nil, err
	}
	for i := range p {
		if p[i].name == name {
			return &p[i], nil
		}
	}
	return nil, nil
}

func (f *idFiles) groupByName(name string) (*groupEntry, error) {
	g, err := f.loadGroup()
	if err != nil {
		return nil, err
	}
	for i := range g {
		if g[i].name == name {
			return &g[i], nil
		}
	}
	return nil, nil
}

// groupsOf lists the gids of the groups that name user as a member.
func (f *idFiles) groupsOf(user string) ([]uint32, error) {
	g, err := f.loadGroup()
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, e := range g {
		for _, m := range e.members {
			if m == user {
				out = append(out, e.gid)
				break
			}
		}
	}
	return out, nil
}

// readInRoot reads a regular file at p inside root, resolving every path
// component inside root (a symlink or ".." cannot lead out of it), capped
// at MaxIDFileSize. A missing file reads as empty. Nothing but a regular
// file is opened for reading (a FIFO or device in the image could block or
// act on open).
func readInRoot(root, p string) ([]byte, error) {
	f, err := openFileInRoot(root, p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil, nil
		}
		if errdefs.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, capread.ErrTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("open %s in the container rootfs: %w: %w", p, err, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	b, err := capread.Read(f, MaxIDFileSize)
	if err != nil {
		return nil, fmt.Errorf("read %s in the container rootfs: %w", p, err)
	}
	return b, nil
}

// regularFile checks that fd is a regular file of at most MaxIDFileSize
// bytes and returns its identity.
func regularFile(fd int, p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, fmt.Errorf("stat %s in the container rootfs: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return st, inval("%s in the container rootfs is not a regular file", p)
	}
	if st.Size > MaxIDFileSize {
		return st, fmt.Errorf("%s in the container rootfs has %d bytes: %w", p, st.Size, capread.ErrTooLarge)
	}
	return st, nil
}

var haveOpenat2 = sync.OnceValue(func() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
})

// openFileInRoot opens the regular file p inside root for reading: an
// O_PATH lookup with openat2(RESOLVE_IN_ROOT) (pathrs-lite on kernels
// without openat2), a type check, then the real open of the same inode.
func openFileInRoot(root, p string) (*os.File, error) {
	if !haveOpenat2() {
		h, err := pathrs.OpenInRoot(root, p)
		if err != nil {
			return nil, err
		}
		defer h.Close()
		if _, err := regularFile(int(h.Fd()), p); err != nil {
			return nil, err
		}
		return pathrs.Reopen(h, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY)
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open rootfs %s: %w", root, err)
	}
	defer unix.Close(rfd)
	open := func(flags uint64) (int, error) {
		how := &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
		for i := 0; ; i++ {
			fd, err := unix.Openat2(rfd, p, how)
			if err == unix.EAGAIN && i < 16 { // a rename raced with ".." resolution
				continue
			}
			return fd, err
		}
	}
	pfd, err := open(unix.O_PATH)
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	st, err := regularFile(pfd, p)
	unix.Close(pfd)
	if err != nil {
		return nil, err
	}
	fd, err := open(unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY)
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	st2, err := regularFile(fd, p)
	if err == nil && (st2.Dev != st.Dev || st2.Ino != st.Ino) {
		err = inval("%s in the container rootfs changed while it was opened", p)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func idLines(b []byte, fields int, fn func([]string)) {
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 0, 4096), MaxIDFileSize+1)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < fields {
			continue
		}
		fn(f)
	}
}

// parsePasswd reads name:password:uid:gid:gecos:home:shell lines; malformed
// lines are skipped.
func parsePasswd(b []byte) []passwdEntry {
	var out []passwdEntry
	idLines(b, 4, func(f []string) {
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil || f[0] == "" {
			return
		}
		out = append(out, passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid)})
	})
	return out
}

// parseGroup reads name:password:gid:member,member lines.
func parseGroup(b []byte) []groupEntry {
	var out []groupEntry
	idLines(b, 3, func(f []string) {
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil || f[0] == "" {
			return
		}
		e := groupEntry{name: f[0], gid: uint32(gid)}
		if len(f) > 3 {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					e.members = append(e.members, m)
				}
			}
		}
		out = append(out, e)
	})
	return out
}
