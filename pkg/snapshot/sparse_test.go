package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"testing"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// TestSparseEntriesRejected: sparse tar entries read back their holes as
// zeros, so a tiny layer could allocate huge files. They are refused.
func TestSparseEntriesRejected(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// A GNU sparse header: type 'S', claimed real size 1 GiB.
	hdr := &tar.Header{Name: "holes", Typeflag: tar.TypeGNUSparse, Mode: 0o644, Size: 0, Format: tar.FormatGNU}
	if err := tw.WriteHeader(hdr); err != nil {
		// The Go writer refuses sparse headers: build one by hand.
		buf.Reset()
		h := make([]byte, 512)
		copy(h, "holes")
		copy(h[100:], "0000644\x00")
		copy(h[108:], "0000000\x00")
		copy(h[116:], "0000000\x00")
		copy(h[124:], "00000000000\x00")
		copy(h[136:], "00000000000\x00")
		h[156] = 'S'
		copy(h[257:], "ustar  \x00")
		copy(h[148:], "        ")
		var sum int
		for _, c := range h {
			sum += int(c)
		}
		copy(h[148:], []byte(octal(sum)))
		buf.Write(h)
		buf.Write(make([]byte, 1024))
	} else {
		tw.Close()
	}
	_, err := Apply(context.Background(), t.TempDir(), &buf, WhiteoutOverlay)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("sparse entry: want invalid argument, got %v", err)
	}
}

func octal(n int) string {
	s := []byte("000000\x00 ")
	for i := 5; i >= 0; i-- {
		s[i] = byte('0' + n%8)
		n /= 8
	}
	return string(s)
}
