package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// epoch is the timestamp of every file, config and history entry, so that
// rebuilding an image gives the same bytes.
var epoch = time.Date(2024, time.January, 1, 0, 0, 0, 0, time.UTC)

// entryKind is the kind of a filesystem entry in a tree.
type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindSymlink
)

// entry is one path of a layer.
type entry struct {
	kind   entryKind
	mode   int64 // permission bits plus setuid/setgid/sticky (04000/02000/01000)
	uid    int
	gid    int
	data   []byte // kindFile
	target string // kindSymlink
	// linkKey groups files that are one inode: the first of a group in
	// archive order is stored as a regular file, the others as hard links
	// to it. Empty means the file stands alone.
	linkKey string
}

// tree is the content of one layer: paths (relative, slash separated, no
// leading slash) to entries. Its tar form is byte-reproducible: entries
// sorted by name, fixed timestamps, owner and mode as given.
type tree struct {
	entries map[string]*entry
}

func newTree() *tree { return &tree{entries: map[string]*entry{}} }

// clean normalises p and rejects paths that escape the root.
func clean(p string) (string, error) {
	c := path.Clean("/" + p)
	if c == "/" || strings.Contains(p, "\x00") {
		return "", fmt.Errorf("layer path %q: %w", p, errdefs.ErrInvalidArgument)
	}
	return strings.TrimPrefix(c, "/"), nil
}

func (t *tree) put(p string, e *entry) error {
	c, err := clean(p)
	if err != nil {
		return err
	}
	if old, ok := t.entries[c]; ok && (old.kind == kindDir) != (e.kind == kindDir) {
		return fmt.Errorf("layer path %q added twice with different kinds: %w", c, errdefs.ErrAlreadyExists)
	}
	// Parents default to root-owned 0755 directories.
	for d := path.Dir(c); d != "."; d = path.Dir(d) {
		if old, ok := t.entries[d]; ok {
			if old.kind != kindDir {
				return fmt.Errorf("layer path %q: parent %q is not a directory: %w", c, d, errdefs.ErrInvalidArgument)
			}
			continue
		}
		t.entries[d] = &entry{kind: kindDir, mode: 0o755}
	}
	t.entries[c] = e
	return nil
}

// Dir adds a directory.
func (t *tree) Dir(p string, mode int64, uid, gid int) error {
	return t.put(p, &entry{kind: kindDir, mode: mode, uid: uid, gid: gid})
}

// File adds a root-owned regular file.
func (t *tree) File(p string, mode int64, data []byte) error {
	return t.put(p, &entry{kind: kindFile, mode: mode, data: data})
}

// LinkedFile adds a root-owned regular file that shares an inode with every
// other file added under the same key.
func (t *tree) LinkedFile(p string, mode int64, data []byte, key string) error {
	return t.put(p, &entry{kind: kindFile, mode: mode, data: data, linkKey: key})
}

// Symlink adds a symbolic link.
func (t *tree) Symlink(p, target string) error {
	return t.put(p, &entry{kind: kindSymlink, mode: 0o777, target: target})
}

// HostFile adds the content of a file of this machine (symlinks followed).
// Files read from the same host path become hard links of each other.
func (t *tree) HostFile(p, hostPath string, mode int64) error {
	real, err := resolveHost(hostPath)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return fmt.Errorf("read %s: %w", hostPath, err)
	}
	return t.LinkedFile(p, mode, data, "host:"+real)
}

// resolveHost follows symlinks of a host path.
func resolveHost(hostPath string) (string, error) {
	real, err := filepath.EvalSymlinks(hostPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("host file %s: %w", hostPath, errdefs.ErrNotFound)
		}
		return "", fmt.Errorf("host file %s: %w", hostPath, err)
	}
	return real, nil
}

// Tar returns the layer as an uncompressed tar stream.
func (t *tree) Tar() ([]byte, error) {
	names := make([]string, 0, len(t.entries))
	for n := range t.entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	firstOf := map[string]string{} // linkKey -> archived name of the regular file
	for _, n := range names {
		e := t.entries[n]
		hdr := &tar.Header{
			Name:    n,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: epoch,
		}
		var body []byte
		switch e.kind {
		case kindDir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name = n + "/"
		case kindSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = e.target
		case kindFile:
			if first, ok := firstOf[e.linkKey]; ok && e.linkKey != "" {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				break
			}
			if e.linkKey != "" {
				firstOf[e.linkKey] = n
			}
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.data))
			body = e.data
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", n, err)
		}
		if _, err := tw.Write(body); err != nil {
			return nil, fmt.Errorf("tar body %s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar close: %w", err)
	}
	return buf.Bytes(), nil
}
