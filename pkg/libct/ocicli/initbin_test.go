package ocicli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shim-cri/shim/internal/cmdline"
)

// TestInstallInit: the embedded init is written once under <root>/.bin,
// read-only and executable by its owner, named by its digest, and
// written again when what is there is not it.
func TestInstallInit(t *testing.T) {
	defer SetEmbeddedInit(embeddedInit.content, embeddedInit.sum)
	root := t.TempDir()
	SetEmbeddedInit([]byte("#!/bin/true\n"), "")
	if _, err := install(root, "shim-init-", embeddedInit); err == nil {
		t.Error("an init without a digest was installed")
	}
	SetEmbeddedInit([]byte("#!/bin/true\n"), "0123abcd")
	path, err := install(root, "shim-init-", embeddedInit)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(root, ".bin", "shim-init-0123abcd") {
		t.Errorf("path %s", path)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o500 || st.Size() != 12 {
		t.Fatalf("installed: %v %v", st, err)
	}
	// Present: kept as is (same inode).
	again, err := install(root, "shim-init-", embeddedInit)
	st2, _ := os.Stat(again)
	if err != nil || again != path || !os.SameFile(st, st2) {
		t.Errorf("second install: %s %v, rewritten: %v", again, err, !os.SameFile(st, st2))
	}
	// Not it (a truncated write): replaced.
	if err := os.Chmod(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := install(root, "shim-init-", embeddedInit); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "#!/bin/true\n" {
		t.Errorf("after a bad copy: %q", b)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, ".bin")); len(ents) != 1 {
		t.Errorf("left in bin: %v", ents)
	}

	// Another version's (and an interrupted write's): removed once it
	// is older than the grace (a command of that version may be about to
	// run it), kept before; the runtime binary's files are not the init's.
	bin := filepath.Join(root, ".bin")
	old := time.Now().Add(-2 * binaryGrace)
	for _, n := range []string{"shim-init-0ld", "shim-init-recent", "shim-runtime-0ld", ".tmp-0ld"} {
		if err := os.WriteFile(filepath.Join(bin, n), nil, 0o500); err != nil {
			t.Fatal(err)
		}
		if n != "shim-init-recent" {
			os.Chtimes(filepath.Join(bin, n), old, old)
		}
	}
	SetEmbeddedInit([]byte("#!/bin/true\n"), "4567cdef")
	if _, err := install(root, "shim-init-", embeddedInit); err != nil {
		t.Fatal(err)
	}
	var names []string
	ents, _ := os.ReadDir(bin)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"shim-init-0123abcd", "shim-init-4567cdef", "shim-init-recent", "shim-runtime-0ld"}; !slices.Equal(names, want) {
		t.Errorf("after installing another version: %v, want %v", names, want)
	}
}

// TestInstallLean: a command the shim binary runs itself installs the
// lean runtime and the init binaries in an existing state directory, and
// makes no state directory that is not there (a mistyped --root).
func TestInstallLean(t *testing.T) {
	defer SetEmbeddedInit(embeddedInit.content, embeddedInit.sum)
	defer SetEmbeddedRuntime(embeddedRuntime.content, embeddedRuntime.sum)
	SetEmbeddedInit([]byte("#!/bin/true\n"), "0123abcd")
	SetEmbeddedRuntime([]byte("#!/bin/true\n#\n"), "4567cdef")
	base := t.TempDir()
	missing := filepath.Join(base, "missing")
	Run([]string{"--root", missing, "list"})
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("list made the state dir %s (%v)", missing, err)
	}
	root := filepath.Join(base, "root")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	Run([]string{"--root", root, "list"})
	for _, n := range []string{"shim-init-0123abcd", "shim-runtime-4567cdef"} {
		if st, err := os.Stat(filepath.Join(root, ".bin", n)); err != nil || st.Mode().Perm() != 0o500 {
			t.Errorf("%s: %v %v", n, st, err)
		}
	}
}

// TestHelp: each command's flags parse (their defaults are valid) and its
// help names it.
func TestHelp(t *testing.T) {
	for _, cmd := range append([]*cmdline.Command{nil}, ociCommand.Commands...) {
		args, path := []string{"oci", "--help"}, "shim oci"
		if cmd != nil {
			args, path = []string{"oci", cmd.Name, "--help"}, "shim oci "+cmd.Name
		}
		var stdout, stderr strings.Builder
		if status := cmdline.Run(mainCommand, args, &stdout, &stderr); status != 0 || !strings.HasPrefix(stdout.String(), "NAME:\n   "+path+" - ") || stderr.Len() != 0 {
			t.Errorf("%q: status %d, stderr %q, help:\n%s", args, status, stderr.String(), stdout.String())
		}
	}
}
