// Package cmon links the per-pod monitor, written in C, into a binary.
// Import it for its side effect in every binary that monitor.Spawn may
// start (cmd/shim-runtime and cmd/shim):
//
//	import _ "github.com/shim-cri/shim/pkg/monitor/cmon"
//
// The monitor runs in an ELF constructor, before the Go runtime starts,
// when the environment selects it (_SHIM_CMONITOR=1, set by Spawn), and
// never returns into Go; otherwise the constructor returns at once. A Go
// process costs a pod a few MB; the C monitor a few hundred KB.
//
// What needs pkg/libct or an OCI runtime (create, start, kill of every
// process, delete, update, exec) the monitor hands to a short-lived Go
// helper, `<binary> monitor-helper` (monitor.HelperMain), that it forks and
// executes itself; the rest (CRI logs, reaping, exit records, events,
// ExecSync output, signals to its own children) it does in one epoll loop.
// mon.h lists the files and what each holds; the names of the protocol
// are in protocol.h, generated from pkg/monitor (go generate).
package cmon

// #cgo CFLAGS: -Wall -Wextra -O2
// int cm_drop_text(void);
import "C"

// DropText unmaps the executable's code and read-only data from this
// process: clean file pages, mapped again (4 KB ones, no huge mappings)
// as they are run or read. The daemon calls it once it has started
// (cmd/shim): start-up (package initialisation, recovery) runs code no
// request runs again, whose pages would otherwise count in its resident
// memory for as long as it runs. The monitor does the same in C. It
// returns how many segments it dropped.
func DropText() int { return int(C.cm_drop_text()) }
