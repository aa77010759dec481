// Package daemonize links a C constructor that, when the environment asks
// for it, forks before the Go runtime starts and lets the parent exit: the
// child (a per-pod monitor) is then not a child of the process that
// started it, but is reparented to init. Import it for its side effect.
package daemonize

/*
#cgo CFLAGS: -Wall -O2
extern void shim_daemonize(void);
void __attribute__((constructor)) shim_daemonize_init(void) { shim_daemonize(); }
*/
import "C"

// EnvVar, set to "1", makes the next exec of the binary daemonize.
const EnvVar = "_SHIM_DAEMONIZE"
