package libct

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// holdFlags are the namespaces HoldNamespaces can create besides the user
// namespace.
const holdFlags = unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS

// NSHolder keeps a new user namespace (and namespaces it owns) alive in a
// waiting stage-0 process until Close, so the caller can pin them (bind
// mount Path(kind)) or use them (an idmapped mount needs the fd of a user
// namespace with its mappings). Nothing of a container runs in it.
type NSHolder struct {
	pid  int
	conn *net.UnixConn
	cmd  *exec.Cmd
}

// HoldNamespaces starts a holder in a new user namespace with the given
// id mappings and, for the kinds in flags (CLONE_NEWNET, CLONE_NEWIPC,
// CLONE_NEWUTS), new namespaces owned by that user namespace. exe is a
// binary that links pkg/libct/nsenter; "" is this process's own (sealed).
func HoldNamespaces(ctx context.Context, exe string, flags uint32, uidMap, gidMap []specs.LinuxIDMapping) (_ *NSHolder, retErr error) {
	if flags&^uint32(holdFlags) != 0 {
		return nil, fmt.Errorf("hold namespaces: flags %#x: only net, ipc and uts can be held: %w", flags, errdefs.ErrInvalidArgument)
	}
	if err := checkIDMappings("uid", uidMap); err != nil {
		return nil, err
	}
	if err := checkIDMappings("gid", gidMap); err != nil {
		return nil, err
	}
	var sealed *os.File
	if exe == "" {
		f, err := sealedExe()
		if err != nil {
			return nil, err
		}
		sealed = f
	}
	conn, child, err := initPipe()
	if err != nil {
		return nil, err
	}
	defer child.Close()
	files, fds := childFiles{initPipe: child, exe: sealed}.layout()
	if sealed != nil {
		exe = "/proc/self/fd/" + strconv.Itoa(fds.exe)
	}
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       []string{"shim", "init"},
		Env:        fds.env(),
		ExtraFiles: files,
	}
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("start namespace holder %s: %w", exe, err)
	}
	child.Close()
	h := &NSHolder{pid: cmd.Process.Pid, conn: conn, cmd: cmd}
	defer func() {
		if retErr != nil {
			cmd.Process.Kill()
			h.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	// A read or write error with the context alive: the holder is gone.
	gone := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("namespace holder %s exited (does it link pkg/libct/nsenter?): %w: %w", exe, err, errdefs.ErrInternal)
	}
	bs := bootstrap{cloneFlags: unix.CLONE_NEWUSER | flags, userMap: true, hold: true}
	if _, err := conn.Write(bs.encode()); err != nil {
		return nil, gone(err)
	}
	for {
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return nil, gone(err)
		}
		switch b[0] {
		case syncUserMap:
			if err := writeIDMaps(h.pid, &specs.Linux{UIDMappings: uidMap, GIDMappings: gidMap}); err != nil {
				return nil, err
			}
			if _, err := conn.Write([]byte{syncUserMapAck}); err != nil {
				return nil, gone(err)
			}
		case syncHeld:
			return h, nil
		case syncErr:
			return nil, stageErr(conn)
		default:
			return nil, fmt.Errorf("namespace holder: unexpected sync byte %#x: %w", b[0], errdefs.ErrInternal)
		}
	}
}

// Path is the /proc path of one of the held namespaces ("user", "net",
// "ipc", "uts"), valid until Close.
func (h *NSHolder) Path(kind string) string {
	return "/proc/" + strconv.Itoa(h.pid) + "/ns/" + kind
}

// Close releases the holder: the namespaces live on only where they are
// pinned or used.
func (h *NSHolder) Close() error {
	h.conn.Close()
	h.cmd.Wait()
	return nil
}

// checkIDMappings checks user namespace mappings: at least one, none empty
// or past the 32-bit id space.
func checkIDMappings(what string, m []specs.LinuxIDMapping) error {
	if len(m) == 0 {
		return fmt.Errorf("no %s mappings: %w", what, errdefs.ErrInvalidArgument)
	}
	if len(m) > 340 { // the kernel's limit on lines of a map
		return fmt.Errorf("%d %s mappings: at most 340: %w", len(m), what, errdefs.ErrInvalidArgument)
	}
	for _, x := range m {
		if x.Size == 0 || uint64(x.ContainerID)+uint64(x.Size) > 1<<32 || uint64(x.HostID)+uint64(x.Size) > 1<<32 {
			return fmt.Errorf("%s mapping %d:%d:%d is out of range: %w", what, x.ContainerID, x.HostID, x.Size, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// readIDMap parses a /proc/<pid>/uid_map or gid_map as seen from this
// process's user namespace.
func readIDMap(path string) ([]specs.LinuxIDMapping, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []specs.LinuxIDMapping
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) != 3 {
			continue
		}
		var v [3]uint64
		for i := range f {
			if v[i], err = strconv.ParseUint(f[i], 10, 32); err != nil {
				return nil, fmt.Errorf("%s: %q: %w", path, s.Text(), err)
			}
		}
		out = append(out, specs.LinuxIDMapping{ContainerID: uint32(v[0]), HostID: uint32(v[1]), Size: uint32(v[2])})
	}
	return out, nil
}

func sameMappings(a, b []specs.LinuxIDMapping) bool {
	key := func(m []specs.LinuxIDMapping) []specs.LinuxIDMapping {
		c := slices.Clone(m)
		slices.SortFunc(c, func(x, y specs.LinuxIDMapping) int { return int(int64(x.ContainerID) - int64(y.ContainerID)) })
		return c
	}
	return slices.Equal(key(a), key(b))
}

// idmapErr classifies a failed mount_setattr(MOUNT_ATTR_IDMAP): EINVAL
// means the filesystem (or the kernel) cannot idmap this mount.
func idmapErr(what string, err error) error {
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%s: idmapped mounts are not supported here: %w: %w", what, err, errdefs.ErrNotImplemented)
	}
	return fmt.Errorf("%s: idmap: %w: %w", what, err, mountErrClass(err))
}

// idmapTree clones the mount at src (recursively with rec) into a new,
// detached mount tree and idmaps it (all of it with recAttr) with the
// mappings of the user namespace open at usernsFd.
func idmapTree(src string, rec, recAttr bool, usernsFd int) (*os.File, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if rec {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w: %w", src, err, mountErrClass(err))
	}
	if usernsFd >= 0 {
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFd)}
		at := unix.AT_EMPTY_PATH
		if recAttr {
			at |= unix.AT_RECURSIVE
		}
		if err := unix.MountSetattr(fd, "", uint(at), attr); err != nil {
			unix.Close(fd)
			return nil, idmapErr(src, err)
		}
	}
	return os.NewFile(uintptr(fd), src), nil
}

// mountPlan is what the parent prepared for the init's mounts: for each
// spec mount, the index of its detached tree in the files sent with the
// init config, or -1.
type mountPlan struct {
	index []int
	files []*os.File
}

func (p *mountPlan) close() {
	for _, f := range p.files {
		f.Close()
	}
}

// needsPreparedMount reports whether the parent makes a bind mount as a
// detached tree: every bind mount of a container in a user namespace (its
// root cannot reach host paths owned by ids it does not map), and every
// idmapped mount (only the runtime's credentials can idmap).
func needsPreparedMount(pm parsedMount, userNS bool) bool {
	return pm.isBind && (userNS || pm.idmap)
}

// prepareMounts opens the bind mounts needsPreparedMount selects, in the
// parent's mount namespace and with its credentials, once the init's
// namespaces exist (an idmapped mount without mappings of its own takes
// those of the container's user namespace).
func prepareMounts(ctx context.Context, spec *specs.Spec, bundle string, initPid int, userNS bool) (_ *mountPlan, retErr error) {
	plan := &mountPlan{index: make([]int, len(spec.Mounts))}
	defer func() {
		if retErr != nil {
			plan.close()
		}
	}()
	var holders []*NSHolder
	defer func() {
		for _, h := range holders {
			h.Close()
		}
	}()
	nsFds := map[string]int{}
	defer func() {
		for _, fd := range nsFds {
			unix.Close(fd)
		}
	}()
	pidDir := "/proc/" + strconv.Itoa(initPid)
	usernsFor := func(m specs.Mount) (int, error) {
		path := pidDir + "/ns/user"
		if len(m.UIDMappings) > 0 {
			same := false
			if userNS {
				u, uerr := readIDMap(pidDir + "/uid_map")
				g, gerr := readIDMap(pidDir + "/gid_map")
				same = uerr == nil && gerr == nil && sameMappings(u, m.UIDMappings) && sameMappings(g, m.GIDMappings)
			}
			if !same {
				key := fmt.Sprint(m.UIDMappings, m.GIDMappings)
				if fd, ok := nsFds[key]; ok {
					return fd, nil
				}
				h, err := HoldNamespaces(ctx, "", 0, m.UIDMappings, m.GIDMappings)
				if err != nil {
					return -1, fmt.Errorf("mount %s: a user namespace for its mappings: %w", m.Destination, err)
				}
				holders = append(holders, h)
				fd, err := unix.Open(h.Path("user"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					return -1, fmt.Errorf("mount %s: %w", m.Destination, err)
				}
				nsFds[key] = fd
				return fd, nil
			}
		}
		if fd, ok := nsFds[""]; ok {
			return fd, nil
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open the container's user namespace: %w", err)
		}
		nsFds[""] = fd
		return fd, nil
	}
	for i, m := range spec.Mounts {
		plan.index[i] = -1
		pm, err := parseSpecMount(m)
		if err != nil {
			return nil, err
		}
		if !needsPreparedMount(pm, userNS) {
			continue
		}
		src := m.Source
		if !strings.HasPrefix(src, "/") {
			src = bundle + "/" + src
		}
		usernsFd := -1
		if pm.idmap {
			if usernsFd, err = usernsFor(m); err != nil {
				return nil, err
			}
		}
		f, err := idmapTree(src, pm.recursive, pm.ridmap, usernsFd)
		if err != nil {
			return nil, fmt.Errorf("bind mount %s on %s: %w", src, m.Destination, err)
		}
		plan.index[i] = len(plan.files)
		plan.files = append(plan.files, f)
	}
	if len(plan.files) > maxFrameFds {
		return nil, fmt.Errorf("%d bind mounts to prepare: at most %d: %w", len(plan.files), maxFrameFds, errdefs.ErrInvalidArgument)
	}
	return plan, nil
}
