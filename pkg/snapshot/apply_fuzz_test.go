package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	tt "github.com/shim-cri/shim/pkg/snapshot/internal/tartest"
)

// fuzzTokens expand bytes 0..15 of fuzzed names, so the fuzzer reaches
// hostile shapes quickly. Token 7 is the sentinel directory's absolute path.
var fuzzTokens = []string{
	"../", "/", "..", ".wh.", ".wh..wh..opq", "s", "outside", "", // 7: sentinel path
	"a/", ".", "passwd", "etc/", "d/", "//", "./", "l",
}

const fuzzOut = 7

var fuzzTypes = []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeFifo, tar.TypeReg, tar.TypeSymlink}

// fuzzTar decodes data into a tar. data[0] == 0xff: the rest is used as
// raw tar bytes. Otherwise it is a list of entries, each
// [type][len][name][len][linkname], name bytes < 16 expanding to tokens.
func fuzzTar(data []byte, out string) []byte {
	if len(data) > 0 && data[0] == 0xff {
		return data[1:]
	}
	str := func() string {
		if len(data) == 0 {
			return ""
		}
		n := int(data[0]) % 64
		data = data[1:]
		if n > len(data) {
			n = len(data)
		}
		var b strings.Builder
		for _, c := range data[:n] {
			switch {
			case c == fuzzOut:
				b.WriteString(out)
			case c < 16:
				b.WriteString(fuzzTokens[c])
			default:
				b.WriteByte(c)
			}
		}
		data = data[n:]
		return b.String()
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for len(data) > 0 {
		typ := fuzzTypes[int(data[0])%len(fuzzTypes)]
		sel := data[0] >> 3
		data = data[1:]
		h := &tar.Header{Typeflag: typ, Name: str(), Linkname: str(), Mode: 0o755 | int64(sel&7)<<9, ModTime: time.Unix(1, 0)}
		if typ == tar.TypeChar && sel&1 == 1 {
			h.Devmajor, h.Devminor = 1, 3 // /dev/null; else 0:0 (a whiteout)
		}
		var body []byte
		if typ == tar.TypeReg {
			body = []byte("pwned")
			h.Size = int64(len(body))
		}
		if tw.WriteHeader(h) != nil {
			continue // a name the writer cannot encode
		}
		_, _ = tw.Write(body)
	}
	_ = tw.Close()
	return buf.Bytes()
}

func encodeFuzz(entries ...[3]string) []byte {
	var b []byte
	for _, e := range entries {
		typ := strings.IndexByte(string(fuzzTypes), e[0][0])
		b = append(b, byte(typ), byte(len(e[1])))
		b = append(b, e[1]...)
		b = append(b, byte(len(e[2])))
		b = append(b, e[2]...)
	}
	return b
}

// FuzzApply checks that Apply never panics and never creates, changes,
// removes or hard links anything outside its root, whatever the layer.
func FuzzApply(f *testing.F) {
	if testing.Short() {
		f.Skip("short")
	}
	requireRoot(f)
	const (
		reg  = string(tar.TypeReg)
		dir  = string(tar.TypeDir)
		sym  = string(tar.TypeSymlink)
		link = string(tar.TypeLink)
	)
	out := string(rune(fuzzOut))
	for _, seed := range [][]byte{
		encodeFuzz([3]string{sym, "s", out}, [3]string{dir, out, ""}, [3]string{reg, "s/passwd", ""}),
		encodeFuzz([3]string{sym, "s", "/"}, [3]string{reg, "s" + out + "/passwd", ""}),
		encodeFuzz([3]string{reg, "\x00outside/passwd", ""}),
		encodeFuzz([3]string{link, "h", "/etc/passwd"}),
		encodeFuzz([3]string{link, "h", "\x00outside/passwd"}),
		encodeFuzz([3]string{reg, ".wh...", ""}, [3]string{reg, ".wh.../../x", ""}),
		encodeFuzz([3]string{sym, "l", out + "/passwd"}, [3]string{link, "h", "l"}, [3]string{reg, "h", ""}),
		encodeFuzz([3]string{dir, out, ""}, [3]string{sym, "s", out}, [3]string{reg, "s/\x04", ""}, [3]string{reg, "s/.wh.passwd", ""}),
		encodeFuzz([3]string{sym, "s", "../outside"}, [3]string{reg, "s/\x04", ""}, [3]string{reg, "s/\x03passwd", ""}),
		encodeFuzz([3]string{sym, "a", "b"}, [3]string{sym, "b", "../../.."}, [3]string{reg, "a/outside/passwd", ""}),
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	for _, tc := range hostileCases() {
		f.Add(append([]byte{0xff}, tt.Tar(tc.entries("../outside")...)...), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, remove bool) {
		mode := WhiteoutOverlay
		if remove {
			mode = WhiteoutRemove
		}
		s := newSandbox(t)
		before := treeState(t, s.tmp, s.root)
		forbidden := forbiddenInodes(t, s.out)
		res, err := ApplyLayer(context.Background(), s.root, bytes.NewReader(fuzzTar(data, s.out)), mode)
		if err == nil {
			checkFlushCovers(t, s.root, res)
		}
		if d := diffState(before, treeState(t, s.tmp, s.root)); len(d) > 0 {
			t.Fatalf("outside the root changed:\n%s", strings.Join(d, "\n"))
		}
		checkNoForeignInodes(t, s.root, forbidden)
	})
}
