package snapshot

import "github.com/shim-cri/shim/pkg/snapshot/internal/fsutil"

// RemoveAll removes path and everything below it like os.RemoveAll, but it
// never follows a symlink and never crosses into another mount: a mount
// left anywhere below path makes it fail (EBUSY) with everything under
// that mount untouched. A missing path is not an error.
func RemoveAll(path string) error { return fsutil.RemoveAll(path) }
