#ifndef SHIM_OCILEAN_H
#define SHIM_OCILEAN_H

// pkg/libct/ocicli's --root default and LeanInitEnv (TestConstants).
#define SHIM_OCI_DEFAULT_ROOT "/run/shim/oci"
#define SHIM_OCI_INIT_ENV "_SHIM_OCI_INIT"

// The --root default, for Go (TestConstants).
const char *shim_oci_default_root(void);

// shim_oci_lean_root returns the state directory of a `shim oci <global
// flags> <subcommand> ...` command line, or NULL when argv is not one or
// has a flag it does not know (the Go command then runs it).
const char *shim_oci_lean_root(int argc, char **argv);

#endif
