// Package libct is shim's own container library: it turns an OCI runtime
// spec and bundle into a running container (namespaces, cgroups, rootfs and
// mounts, pivot_root, /dev, masked and read-only paths, capabilities,
// no_new_privs, users, rlimits, seccomp), with the create/start split of the
// OCI runtime, exec by setns, and state on disk so another process can load,
// signal, exec into, update, pause and delete a container it did not create.
//
// The process that calls Create and Exec becomes the parent of the container
// init and exec'd processes (the C constructor in pkg/libct/nsenter clones
// them with CLONE_PARENT), so a long-lived caller can reap them with Wait.
// Any binary that calls Create or Exec must link pkg/libct/nsenter and
// dispatch its "init" argument to Init: libct executes that binary (or the
// one SetInitBinary names, cmd/shim-init) as the container init, through a
// detached read-only overlay of its directory (a sealed memfd copy where
// overlayfs cannot be used). A direct create (PrepareCreate) whose spec the
// C init covers runs no Go in the init at all: the daemon renders a plan
// (cplan_linux.go) that nsenter's C stage carries out (nsenter/cinit.c).
//
// This is shim's internal code, not a stable public API.
package libct
