package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// mountNewFileContent is what mounttest writes into the files it creates,
// and the content --file_content_in_loop waits for.
const mountNewFileContent = "mount-tester new file\n"

// mounttest checks a volume the way the storage specs read it back from the
// container log, one line per check:
//
//	mount type of "P": tmpfs (or the statfs magic number in decimal)
//	content of file "P": ...
//	mode of file "P": -rw-r--r--        (Go's os.FileMode)
//	perms of file "P": -rw-r--r--
//	owner UID of "P": N / owner GID of "P": N
//
// in this order: file system type, new files (created with umask 0 and the
// given permissions, then read back), mode, perms, owner, content, content
// in a loop. It exits 1 if any check failed.
func mounttest(args []string) error {
	fs := newFlags("mounttest")
	fsType := fs.String("fs_type", "", "path to print the file system type of")
	fileMode := fs.String("file_mode", "", "path to print the mode of")
	filePerm := fs.String("file_perm", "", "path to print the permission bits of")
	fileOwner := fs.String("file_owner", "", "path to print the owner uid and gid of")
	new0644 := fs.String("new_file_0644", "", "file to create with mode 0644 and read back")
	new0666 := fs.String("new_file_0666", "", "file to create with mode 0666 and read back")
	new0660 := fs.String("new_file_0660", "", "file to create with mode 0660 and read back")
	new0777 := fs.String("new_file_0777", "", "file to create with mode 0777 and read back")
	content := fs.String("file_content", "", "file to print the content of")
	contentLoop := fs.String("file_content_in_loop", "", "file to print the content of every 2 s")
	retry := fs.Int("retry_time", 180, "seconds to keep reading --file_content_in_loop")
	breakOnExpected := fs.Bool("break_on_expected_content", true, "stop the loop once the file holds what mounttest writes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	syscall.Umask(0)

	failed := false
	check := func(path string, f func(string) error) {
		if path != "" && f(path) != nil {
			failed = true
		}
	}
	check(*fsType, printFSType)
	for _, nf := range []struct {
		path string
		perm os.FileMode
	}{{*new0644, 0o644}, {*new0666, 0o666}, {*new0660, 0o660}, {*new0777, 0o777}} {
		perm := nf.perm
		check(nf.path, func(p string) error { return writeAndRead(p, perm) })
	}
	check(*fileMode, func(p string) error { return printStat(p, "mode of file", false) })
	check(*filePerm, func(p string) error { return printStat(p, "perms of file", true) })
	check(*fileOwner, printOwner)
	check(*content, printContent)
	check(*contentLoop, func(p string) error { return contentInLoop(p, time.Duration(*retry)*time.Second, *breakOnExpected) })
	if failed {
		os.Exit(1)
	}
	return nil
}

func printFSType(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		fmt.Printf("error from statfs(%q): %v\n", path, err)
		return err
	}
	name := strconv.FormatInt(st.Type, 10)
	if st.Type == unix.TMPFS_MAGIC {
		name = "tmpfs"
	}
	fmt.Printf("mount type of %q: %s\n", path, name)
	return nil
}

func writeAndRead(path string, perm os.FileMode) error {
	if err := os.WriteFile(path, []byte(mountNewFileContent), perm); err != nil {
		fmt.Printf("error writing new file %q: %v\n", path, err)
		return err
	}
	return printContent(path)
}

func printStat(path, what string, permOnly bool) error {
	fi, err := os.Stat(path)
	if err != nil {
		fmt.Printf("error from Stat(%q): %v\n", path, err)
		return err
	}
	mode := fi.Mode()
	if permOnly {
		mode = mode.Perm()
	}
	fmt.Printf("%s %q: %v\n", what, path, mode)
	return nil
}

func printOwner(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		fmt.Printf("error from stat(%q): %v\n", path, err)
		return err
	}
	fmt.Printf("owner UID of %q: %d\n", path, st.Uid)
	fmt.Printf("owner GID of %q: %d\n", path, st.Gid)
	return nil
}

func printContent(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Printf("error reading file content for %q: %v\n", path, err)
		return err
	}
	fmt.Printf("content of file %q: %s\n", path, b)
	return nil
}

// contentInLoop prints the file every 2 s for up to d; with stopOnExpected
// it stops once the file holds mountNewFileContent. The result is that of
// the last read.
func contentInLoop(path string, d time.Duration, stopOnExpected bool) error {
	err := errors.New("no read within the retry time")
	for start := time.Now(); time.Since(start) < d; time.Sleep(2 * time.Second) {
		var b []byte
		if b, err = os.ReadFile(path); err != nil {
			fmt.Printf("Error reading file %s: %v, retrying\n", path, err)
			continue
		}
		fmt.Printf("content of file %q: %s\n", path, b)
		if !stopOnExpected {
			continue
		}
		if string(b) == mountNewFileContent {
			return nil
		}
		fmt.Printf("Unexpected content. Expected: %s. Retrying\n", mountNewFileContent)
	}
	return err
}
