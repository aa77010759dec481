package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// multiarchTriplet is Debian's library directory name for this machine.
func multiarchTriplet() string {
	switch runtime.GOARCH {
	case "arm64":
		return "aarch64-linux-gnu"
	case "arm":
		return "arm-linux-gnueabihf"
	case "ppc64le":
		return "powerpc64le-linux-gnu"
	case "s390x":
		return "s390x-linux-gnu"
	case "riscv64":
		return "riscv64-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

// libSearchPath is where the dynamic loader of a Debian system looks for
// libraries when nothing else (RUNPATH, ld.so.cache) says otherwise.
func libSearchPath() []string {
	t := multiarchTriplet()
	return []string{"/lib/" + t, "/usr/lib/" + t, "/lib64", "/usr/lib64", "/lib", "/usr/lib"}
}

// elfDeps lists what a dynamically linked program needs at run time on this
// host: its program interpreter (empty for a static program) and the host
// paths of every shared library in its DT_NEEDED closure, keyed by soname.
func elfDeps(program string) (interp string, libs map[string]string, err error) {
	libs = map[string]string{}
	interp, needed, err := readELF(program)
	if err != nil {
		return "", nil, err
	}
	queue := needed
	for len(queue) > 0 {
		soname := queue[0]
		queue = queue[1:]
		if _, seen := libs[soname]; seen {
			continue
		}
		host, err := findLib(soname)
		if err != nil {
			return "", nil, fmt.Errorf("%s needs %s: %w", program, soname, err)
		}
		libs[soname] = host
		_, more, err := readELF(host)
		if err != nil {
			return "", nil, err
		}
		queue = append(queue, more...)
	}
	return interp, libs, nil
}

func readELF(p string) (interp string, needed []string, err error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", nil, fmt.Errorf("elf %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return "", nil, fmt.Errorf("elf %s: interpreter: %w", p, err)
		}
		interp = strings.TrimRight(string(b), "\x00")
	}
	needed, err = f.ImportedLibraries()
	if err != nil {
		return "", nil, fmt.Errorf("elf %s: needed libraries: %w", p, err)
	}
	return interp, needed, nil
}

func findLib(soname string) (string, error) {
	if strings.Contains(soname, "/") {
		return "", fmt.Errorf("library name %q: %w", soname, errdefs.ErrInvalidArgument)
	}
	for _, dir := range libSearchPath() {
		p := filepath.Join(dir, soname)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("stat %s: %w", p, err)
		}
	}
	return "", fmt.Errorf("library %s in %v: %w", soname, libSearchPath(), errdefs.ErrNotFound)
}

// addProgram puts a host program at dst in the tree together with its
// program interpreter and libraries (under /lib/<triplet>), so that it runs
// in an image that has no other C library.
func (t *tree) addProgram(dst, hostPath string, mode int64) error {
	interp, libs, err := elfDeps(hostPath)
	if err != nil {
		return err
	}
	if err := t.HostFile(dst, hostPath, mode); err != nil {
		return err
	}
	if interp != "" {
		if err := t.HostFile(interp, interp, 0o755); err != nil {
			return err
		}
	}
	libDir := "lib/" + multiarchTriplet()
	for soname, host := range libs {
		if err := t.HostFile(libDir+"/"+soname, host, 0o755); err != nil {
			return err
		}
	}
	return nil
}
