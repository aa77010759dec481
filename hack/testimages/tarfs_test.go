package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/shim-cri/shim/pkg/errdefs"
)

type tarEntry struct {
	hdr  *tar.Header
	body []byte
}

func readTar(t *testing.T, b []byte) []tarEntry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []tarEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read tar body %s: %v", hdr.Name, err)
		}
		out = append(out, tarEntry{hdr, body})
	}
}

func TestTreeTar(t *testing.T) {
	build := func() *tree {
		tr := newTree()
		for _, err := range []error{
			tr.LinkedFile("bin/sh", 0o755, []byte("BB"), "busybox"),
			tr.LinkedFile("bin/[", 0o755, []byte("BB"), "busybox"),
			tr.LinkedFile("bin/ls", 0o755, []byte("BB"), "busybox"),
			tr.File("usr/local/bin/nnp", 0o4755, []byte("ELF")),
			tr.Dir("tmp", 0o1777, 0, 0),
			tr.Dir("home/u", 0o700, 1000, 1000),
			tr.Symlink("lib64/ld.so", "../lib/ld.so"),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		return tr
	}
	a, err := build().Tar()
	if err != nil {
		t.Fatal(err)
	}
	b, err := build().Tar()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same tree gave different tar bytes")
	}

	want := []struct {
		name     string
		typ      byte
		mode     int64
		uid      int
		linkname string
		body     string
	}{
		{"bin/", tar.TypeDir, 0o755, 0, "", ""},
		{"bin/[", tar.TypeReg, 0o755, 0, "", "BB"},
		{"bin/ls", tar.TypeLink, 0o755, 0, "bin/[", ""},
		{"bin/sh", tar.TypeLink, 0o755, 0, "bin/[", ""},
		{"home/", tar.TypeDir, 0o755, 0, "", ""},
		{"home/u/", tar.TypeDir, 0o700, 1000, "", ""},
		{"lib64/", tar.TypeDir, 0o755, 0, "", ""},
		{"lib64/ld.so", tar.TypeSymlink, 0o777, 0, "../lib/ld.so", ""},
		{"tmp/", tar.TypeDir, 0o1777, 0, "", ""},
		{"usr/", tar.TypeDir, 0o755, 0, "", ""},
		{"usr/local/", tar.TypeDir, 0o755, 0, "", ""},
		{"usr/local/bin/", tar.TypeDir, 0o755, 0, "", ""},
		{"usr/local/bin/nnp", tar.TypeReg, 0o4755, 0, "", "ELF"},
	}
	got := readTar(t, a)
	if len(got) != len(want) {
		for _, e := range got {
			t.Logf("entry %s", e.hdr.Name)
		}
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		h := got[i].hdr
		if h.Name != w.name || h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.uid ||
			h.Linkname != w.linkname || string(got[i].body) != w.body {
			t.Errorf("entry %d = %q type %c mode %o uid %d gid %d link %q body %q; want %+v",
				i, h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, got[i].body, w)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("entry %s mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
	}
}

func TestTreeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  func(*tree) error
		want error
	}{
		{"empty path", func(tr *tree) error { return tr.File("", 0o644, nil) }, errdefs.ErrInvalidArgument},
		{"root", func(tr *tree) error { return tr.Dir("/", 0o755, 0, 0) }, errdefs.ErrInvalidArgument},
		{"dot-dot to root", func(tr *tree) error { return tr.File("..", 0o644, nil) }, errdefs.ErrInvalidArgument},
		{"NUL byte", func(tr *tree) error { return tr.File("etc/a\x00b", 0o644, nil) }, errdefs.ErrInvalidArgument},
		{"file under a file", func(tr *tree) error {
			if err := tr.File("etc", 0o644, nil); err != nil {
				return err
			}
			return tr.File("etc/passwd", 0o644, nil)
		}, errdefs.ErrInvalidArgument},
		{"dir over a file", func(tr *tree) error {
			if err := tr.File("etc", 0o644, nil); err != nil {
				return err
			}
			return tr.Dir("etc", 0o755, 0, 0)
		}, errdefs.ErrAlreadyExists},
		{"missing host file", func(tr *tree) error { return tr.HostFile("x", "/nonexistent/shim/file", 0o644) }, errdefs.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.add(newTree()); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestTreeDotDotStaysInside(t *testing.T) {
	tr := newTree()
	if err := tr.File("../../etc/x", 0o644, []byte("x")); err != nil {
		t.Fatal(err)
	}
	b, err := tr.Tar()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range readTar(t, b) {
		if bytes.Contains([]byte(e.hdr.Name), []byte("..")) || e.hdr.Name[0] == '/' {
			t.Errorf("entry %q escapes the layer root", e.hdr.Name)
		}
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestNewLayer(t *testing.T) {
	tr := newTree()
	if err := tr.File("etc/data", 0o644, bytes.Repeat([]byte("shim "), 1000)); err != nil {
		t.Fatal(err)
	}
	tarball, err := tr.Tar()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c          compression
		mt         types.MediaType
		decompress func([]byte) ([]byte, error)
	}{
		{gzipped, types.OCILayer, func(b []byte) ([]byte, error) {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(zr)
		}},
		{zstded, types.OCILayerZStd, func(b []byte) ([]byte, error) {
			d, err := zstd.NewReader(nil)
			if err != nil {
				return nil, err
			}
			defer d.Close()
			return d.DecodeAll(b, nil)
		}},
		{uncompressed, types.OCIUncompressedLayer, func(b []byte) ([]byte, error) { return b, nil }},
	} {
		t.Run(tc.c.String(), func(t *testing.T) {
			l, err := newLayer(tarball, tc.c)
			if err != nil {
				t.Fatal(err)
			}
			again, err := newLayer(tarball, tc.c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(l.blob, again.blob) {
				t.Fatal("compressing the same tar twice gave different blobs")
			}
			if mt, _ := l.MediaType(); mt != tc.mt {
				t.Errorf("media type %s, want %s", mt, tc.mt)
			}
			plain, err := tc.decompress(l.blob)
			if err != nil {
				t.Fatalf("decompress: %v", err)
			}
			if !bytes.Equal(plain, tarball) {
				t.Fatal("blob does not decompress to the tar")
			}
			if d, _ := l.Digest(); d.String() != sha(l.blob) {
				t.Errorf("digest %s, want %s", d, sha(l.blob))
			}
			if d, _ := l.DiffID(); d.String() != sha(tarball) {
				t.Errorf("diffID %s, want %s", d, sha(tarball))
			}
			if n, _ := l.Size(); n != int64(len(l.blob)) {
				t.Errorf("size %d, want %d", n, len(l.blob))
			}
		})
	}
	if _, err := newLayer(tarball, compression(42)); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown compression: got %v, want ErrInvalidArgument", err)
	}
}
