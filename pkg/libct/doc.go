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
// dispatch its "init" argument to Init, because libct re-executes a sealed
// memfd copy of /proc/self/exe as the container init.
//
// This is shim's internal code, not a stable public API.
package libct
