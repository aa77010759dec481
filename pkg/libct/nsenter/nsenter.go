// Package nsenter links the C constructor that runs before the Go runtime in
// a shim container init or exec process (stage 0): it joins namespaces by
// path (mount and user namespaces can only be joined single-threaded),
// creates new ones, and clones the real init with CLONE_PARENT.
//
// Import it for its side effect in every binary that pkg/libct re-executes:
//
//	import _ "github.com/shim-cri/shim/pkg/libct/nsenter"
//
// The constructor is a no-op unless the _SHIM_INITPIPE environment variable
// names an inherited file descriptor, so it costs nothing in the daemon.
package nsenter

// #cgo CFLAGS: -Wall -Wextra -O2
// extern int shim_nsexec_stage;
import "C"

// InInit reports whether this process is a container init or exec process
// cloned by the C stage (and so must run the libct init).
func InInit() bool { return C.shim_nsexec_stage == 1 }
