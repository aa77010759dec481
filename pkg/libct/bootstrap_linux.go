package libct

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/shim-cri/shim/pkg/errdefs"
	"golang.org/x/sys/unix"
)

// Bootstrap records for the C stage (pkg/libct/nsenter/nsexec.c).
const (
	bsMagic       = 0x4d494853
	bsCloneFlags  = 1
	bsNSPath      = 2
	bsUserMap     = 3
	bsTimeOffsets = 4
	bsHold        = 5

	syncUserMap    = 'U'
	syncUserMapAck = 'u'
	syncPid        = 'P'
	syncErr        = 'E'
	syncHeld       = 'H'

	envInitPipe = "_SHIM_INITPIPE"
	envFifoFd   = "_SHIM_FIFOFD"
	envStage    = "_SHIM_STAGE"
	envLogLevel = "_SHIM_LOGLEVEL"

	maxFrame = 16 << 20
	// maxFrameFds is the most fds one frame carries (the kernel's
	// SCM_MAX_FD).
	maxFrameFds = 253
)

type bootstrap struct {
	cloneFlags  uint32
	nsPaths     []string // "type:path"
	userMap     bool
	timeOffsets string
	hold        bool // stage 0 keeps the namespaces and waits (HoldNamespaces)
	cinit       bool // the init runs a plan in C (cplan_linux.go)
}

func (b *bootstrap) encode() []byte {
	var body bytes.Buffer
	rec := func(t uint16, data []byte) {
		var h [8]byte
		binary.LittleEndian.PutUint16(h[0:], t)
		binary.LittleEndian.PutUint32(h[4:], uint32(len(data)))
		body.Write(h[:])
		body.Write(data)
	}
	var f [4]byte
	binary.LittleEndian.PutUint32(f[:], b.cloneFlags)
	rec(bsCloneFlags, f[:])
	for _, p := range b.nsPaths {
		rec(bsNSPath, []byte(p))
	}
	if b.userMap {
		rec(bsUserMap, nil)
	}
	if b.timeOffsets != "" {
		rec(bsTimeOffsets, []byte(b.timeOffsets))
	}
	if b.hold {
		rec(bsHold, nil)
	}
	if b.cinit {
		rec(bsCInit, nil)
	}
	out := make([]byte, 8, 8+body.Len())
	binary.LittleEndian.PutUint32(out[0:], bsMagic)
	binary.LittleEndian.PutUint32(out[4:], uint32(body.Len()))
	return append(out, body.Bytes()...)
}

// stageErr converts an error report of the C stage into a typed error.
func stageErr(r io.Reader) error {
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("nsexec: truncated error: %w", errdefs.ErrInternal)
	}
	errno := unix.Errno(binary.LittleEndian.Uint32(h[0:]))
	n := binary.LittleEndian.Uint32(h[4:])
	if n > 4096 {
		n = 4096
	}
	msg := make([]byte, n)
	io.ReadFull(r, msg)
	if errno == 0 {
		return fmt.Errorf("nsexec: %s: %w", msg, errdefs.ErrInternal)
	}
	return fmt.Errorf("nsexec: %s: %w: %w", msg, errno, errdefs.OSClass(errno, errdefs.ErrInternal))
}

// Types of initMsg the C monitor reads too (ExecTemplateNames).
const (
	msgReady = "ready"
	msgError = "error"
)

// initMsg is a frame from the Go init to its parent.
type initMsg struct {
	Type  string        `json:"type"` // msgReady, msgError, "console", "hooks"
	Error *errdefs.Wire `json:"error,omitempty"`
	Name  string        `json:"name,omitempty"`
}

// frameConn is an end of the init pipe as readFrame and writeFrame use it:
// the parent's *net.UnixConn or the init's initEnd.
type frameConn interface {
	io.ReadWriter
	ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error)
	WriteMsgUnix(b, oob []byte, addr *net.UnixAddr) (n, oobn int, err error)
}

// initEnd is the Go init's end of the init pipe, used with blocking
// system calls: the init needs no network poller, which net.FileConn
// would start in every container start and exec.
type initEnd int

func (p initEnd) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(p), b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(b) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

func (p initEnd) Write(b []byte) (int, error) {
	n, _, err := p.WriteMsgUnix(b, nil, nil)
	return n, err
}

func (p initEnd) ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error) {
	for {
		n, oobn, flags, _, err = unix.Recvmsg(int(p), b, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			return n, oobn, flags, nil, err
		}
	}
}

func (p initEnd) WriteMsgUnix(b, oob []byte, _ *net.UnixAddr) (n, oobn int, err error) {
	for {
		n, err = unix.SendmsgN(int(p), b, oob, nil, 0)
		if err != unix.EINTR {
			if err == nil {
				oobn = len(oob)
			}
			return n, oobn, err
		}
	}
}

// writeFrame writes a length-prefixed JSON frame, with fds attached.
func writeFrame(c frameConn, v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 4+len(b))
	binary.LittleEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.WriteMsgUnix(buf, oob, nil)
	if err != nil {
		return err
	}
	if n < len(buf) {
		_, err = c.Write(buf[n:])
	}
	return err
}

// readFrame reads one frame into v and returns any fds attached to it.
func readFrame(c frameConn, v any) ([]*os.File, error) {
	var h [4]byte
	oob := make([]byte, unix.CmsgSpace(4*maxFrameFds))
	n, oobn, _, _, err := c.ReadMsgUnix(h[:], oob)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, io.EOF
	}
	if n < 4 {
		if _, err := io.ReadFull(c, h[n:]); err != nil {
			return nil, err
		}
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, m := range msgs {
				fds, err := unix.ParseUnixRights(&m)
				if err != nil {
					continue
				}
				for _, fd := range fds {
					unix.CloseOnExec(fd)
					files = append(files, os.NewFile(uintptr(fd), "received"))
				}
			}
		}
	}
	l := binary.LittleEndian.Uint32(h[:])
	if l > maxFrame {
		return files, errors.New("frame too large")
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(c, b); err != nil {
		return files, err
	}
	return files, json.Unmarshal(b, v)
}
