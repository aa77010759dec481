// Package tartest builds layer tars for the snapshot tests.
package tartest

import (
	"archive/tar"
	"bytes"
	"time"
)

// Epoch is the default modification time of built entries.
var Epoch = time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)

// Entry is one tar entry; Data is the content of regular files.
type Entry struct {
	tar.Header
	Data string
}

// With returns e changed by fn (for one-off fields: owner, xattrs, times).
func (e Entry) With(fn func(*Entry)) Entry {
	fn(&e)
	return e
}

// Xattr returns e with PAX xattr name=value.
func (e Entry) Xattr(name, value string) Entry {
	recs := make(map[string]string, len(e.PAXRecords)+1)
	for k, v := range e.PAXRecords {
		recs[k] = v
	}
	recs["SCHILY.xattr."+name] = value
	e.PAXRecords = recs
	e.Format = tar.FormatPAX
	return e
}

// Owner returns e owned by uid:gid.
func (e Entry) Owner(uid, gid int) Entry {
	e.Uid, e.Gid = uid, gid
	return e
}

// Mode returns e with permission bits mode.
func (e Entry) Mode(mode int64) Entry {
	e.Header.Mode = mode
	return e
}

// Time returns e with modification time mt and access time at.
func (e Entry) Time(mt, at time.Time) Entry {
	e.ModTime, e.AccessTime = mt, at
	e.Format = tar.FormatPAX
	return e
}

func hdr(name string, typ byte, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: Epoch}
}

// File is a regular file.
func File(name, data string) Entry {
	return Entry{Header: hdr(name, tar.TypeReg, 0o644), Data: data}
}

// Dir is a directory.
func Dir(name string) Entry { return Entry{Header: hdr(name, tar.TypeDir, 0o755)} }

// Symlink is a symbolic link name -> target.
func Symlink(name, target string) Entry {
	e := Entry{Header: hdr(name, tar.TypeSymlink, 0o777)}
	e.Linkname = target
	return e
}

// Link is a hard link name -> target.
func Link(name, target string) Entry {
	e := Entry{Header: hdr(name, tar.TypeLink, 0o644)}
	e.Linkname = target
	return e
}

// Char is a character device.
func Char(name string, major, minor int64) Entry {
	e := Entry{Header: hdr(name, tar.TypeChar, 0o666)}
	e.Devmajor, e.Devminor = major, minor
	return e
}

// Block is a block device.
func Block(name string, major, minor int64) Entry {
	e := Entry{Header: hdr(name, tar.TypeBlock, 0o660)}
	e.Devmajor, e.Devminor = major, minor
	return e
}

// Fifo is a named pipe.
func Fifo(name string) Entry { return Entry{Header: hdr(name, tar.TypeFifo, 0o644)} }

// Whiteout hides name (".wh.<base>" in its directory).
func Whiteout(dir, base string) Entry {
	if dir != "" {
		dir += "/"
	}
	return File(dir+".wh."+base, "")
}

// Opaque marks dir opaque.
func Opaque(dir string) Entry {
	if dir != "" {
		dir += "/"
	}
	return File(dir+".wh..wh..opq", "")
}

// Tar builds the archive. It panics on writer errors: inputs are test
// literals.
func Tar(entries ...Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			panic(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.Data)); err != nil {
				panic(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}
