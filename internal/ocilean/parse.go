package ocilean

// #include <stdlib.h>
// #include "ocilean.h"
import "C"

import "unsafe"

// leanRoot is shim_oci_lean_root for a Go argv (tests).
func leanRoot(args []string) (string, bool) {
	argv := make([]*C.char, len(args)+1)
	for i, a := range args {
		argv[i] = C.CString(a)
		defer C.free(unsafe.Pointer(argv[i]))
	}
	r := C.shim_oci_lean_root(C.int(len(args)), &argv[0])
	if r == nil {
		return "", false
	}
	return C.GoString(r), true
}

// defaultRoot is the C constructor's --root default.
func defaultRoot() string { return C.GoString(C.shim_oci_default_root()) }

// initEnv is the variable it names the init binary in.
const initEnv = C.SHIM_OCI_INIT_ENV
