package libct

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct/specjson"
	"golang.org/x/sys/unix"
)

const (
	stateFile = "state.json"
	fifoName  = "exec.fifo"
	// maxStateSize caps reads of a state file.
	maxStateSize = 8 << 20
)

// idPattern is the form of a container id: a letter or digit, then
// letters, digits and _.+- (checked by hand: the lean runtime binary
// links no regexp).
const idPattern = `^[A-Za-z0-9][A-Za-z0-9_.+-]*$`

// ValidateID checks a container id is safe as a path component.
func ValidateID(id string) error {
	if len(id) > 1024 || !validID(id) {
		return fmt.Errorf("container id %q: must match %s: %w", id, idPattern, errdefs.ErrInvalidArgument)
	}
	return nil
}

// validID reports whether id matches idPattern.
func validID(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '+' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func stateDir(root, id string) string { return filepath.Join(root, id) }

// storedWire is the state file: stored, its spec coded by specjson (the
// spec is most of the file, and encoding/json's first use of its types
// in a process costs milliseconds: every command reads the state once).
type storedWire struct {
	stored
	Spec json.RawMessage `json:"spec"`
}

// writeState writes the state file (writeAtomic).
func writeState(dir string, st *stored) error {
	w := storedWire{stored: *st, Spec: json.RawMessage("null")}
	if st.Spec != nil {
		b, err := specjson.Encode(st.Spec)
		if err != nil {
			return fmt.Errorf("encode state: %w: %w", err, errdefs.ErrInternal)
		}
		w.Spec = b
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return fmt.Errorf("encode state: %w", errdefs.ErrInternal)
	}
	if err := writeAtomic(dir, stateFile, b); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// writeAtomic writes a file of a container's state dir: temp file, rename.
// It is not synced: the state root is runtime state (tmpfs by default,
// /run/shim) that a reboot ends along with every container it describes,
// and a crash of this process leaves either file whole.
func writeAtomic(dir, name string, b []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

func readState(root, id string) (*stored, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(stateDir(root, id), stateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("container %q: read state: %w", id, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitedReader{f, maxStateSize}); err != nil {
		return nil, fmt.Errorf("container %q: read state: %w: %w", id, err, errdefs.ErrDataLoss)
	}
	var w storedWire
	if err := json.Unmarshal(buf.Bytes(), &w); err != nil {
		return nil, fmt.Errorf("container %q: corrupt state: %w: %w", id, err, errdefs.ErrDataLoss)
	}
	st := w.stored
	if len(w.Spec) > 0 && string(w.Spec) != "null" {
		st.Spec = new(specs.Spec)
		if err := specjson.Decode(w.Spec, st.Spec); err != nil {
			return nil, fmt.Errorf("container %q: corrupt state: %w: %w", id, err, errdefs.ErrDataLoss)
		}
	}
	return &st, nil
}

type limitedReader struct {
	f *os.File
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("state file too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// procStat returns the start time (clock ticks since boot, field 22) and
// state letter of pid from /proc/<pid>/stat.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+2:])
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return start, fields[0][0], nil
}

// alive reports whether pid is still the process that started at start.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, st, err := procStat(pid)
	if err != nil || s != start {
		return false
	}
	return st != 'Z' && st != 'X'
}

func fifoExists(dir string) bool {
	var s unix.Stat_t
	return unix.Lstat(filepath.Join(dir, fifoName), &s) == nil && s.Mode&unix.S_IFMT == unix.S_IFIFO
}
