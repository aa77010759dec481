package capread

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestRead(t *testing.T) {
	b, err := Read(strings.NewReader("12345"), 5)
	if err != nil || string(b) != "12345" {
		t.Fatalf("at the cap: %q %v", b, err)
	}
	_, err = Read(strings.NewReader("123456"), 5)
	if !errors.Is(err, ErrTooLarge) || errdefs.Class(err) != "resource_exhausted" {
		t.Fatalf("over the cap: %v (class %s)", err, errdefs.Class(err))
	}
	boom := errors.New("boom")
	if _, err := Read(iotest.ErrReader(boom), 5); !errors.Is(err, boom) || errors.Is(err, ErrTooLarge) {
		t.Fatalf("read error: %v", err)
	}
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("abcdef"), 0o600)
	if _, err := File(p, 5); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), p) {
		t.Fatalf("file over the cap: %v", err)
	}
	if b, err := File(p, 6); err != nil || string(b) != "abcdef" {
		t.Fatalf("file: %q %v", b, err)
	}
	if _, err := File(filepath.Join(t.TempDir(), "none"), 5); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
