// Package binfile writes the binaries shim embeds (the monitor's, the
// container init) to the files they are executed from.
package binfile

import (
	"os"
	"path/filepath"
)

// Write writes content to dir/name, read-only and executable by its
// owner, through a temporary file renamed into place (a reader never sees
// half a binary), making dir (0700) if needed, and returns the path.
func Write(dir, name string, content []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	// Small writes keep the page cache in small folios: a process then
	// maps only the pages of the binary it touches, not 2 MiB around each.
	for b := content; len(b) > 0; {
		n := min(len(b), 64<<10)
		if _, err := tmp.Write(b[:n]); err != nil {
			tmp.Close()
			return "", err
		}
		b = b[n:]
	}
	if err := tmp.Chmod(0o500); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.Rename(tmp.Name(), path)
}
