package libct_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

var idSeq atomic.Int64

func newID() string { return fmt.Sprintf("lt%d-%d", os.Getpid(), idSeq.Add(1)) }

// ctr is a container under test with its combined output.
type ctr struct {
	t    *testing.T
	c    *libct.Container
	root string
	id   string
	out  *bytes.Buffer
	done chan struct{}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// create creates a container from b with its output captured.
func create(t *testing.T, b *testbundle.Bundle, opts libct.CreateOpts) (*ctr, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Stdout == nil {
		opts.Stdout = w
	}
	if opts.Stderr == nil {
		opts.Stderr = w
	}
	root := t.TempDir()
	id := newID()
	c, err := libct.Create(ctx(t), root, id, b.Spec, b.Dir, opts)
	w.Close()
	x := &ctr{t: t, c: c, root: root, id: id, out: &bytes.Buffer{}, done: make(chan struct{})}
	go func() { io.Copy(x.out, r); r.Close(); close(x.done) }()
	if err != nil {
		<-x.done
		return x, err
	}
	t.Cleanup(func() {
		if c, err := libct.Load(root, id); err == nil {
			c.Delete(context.Background(), true)
		}
	})
	return x, nil
}

// run creates, starts and waits for a container; it returns its output
// and exit status.
func run(t *testing.T, b *testbundle.Bundle) (string, libct.ExitStatus) {
	t.Helper()
	x, err := create(t, b, libct.CreateOpts{})
	if err != nil {
		t.Fatalf("create: %v\n%s", err, x.out.String())
	}
	if err := x.c.Start(ctx(t)); err != nil {
		t.Fatalf("start: %v", err)
	}
	es, err := x.c.Wait()
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	<-x.done
	if err := x.c.Delete(ctx(t), false); err != nil {
		t.Fatalf("delete: %v", err)
	}
	return x.out.String(), es
}

// sh is a bundle running a shell script.
func sh(t *testing.T, script string) *testbundle.Bundle {
	return testbundle.New(t, "/bin/sh", "-c", script)
}

// field returns the value of "key:" in /proc/self/status-like text.
func field(text, key string) string {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cgroupGone reports whether a cgroup path is gone from every hierarchy.
func cgroupGone(path string) bool {
	for _, h := range []string{"memory", "pids", "cpu", "freezer", "devices", "unified", ""} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, path)); err == nil {
			return false
		}
	}
	return true
}

func testbundleNew(t *testing.T, args ...string) *testbundle.Bundle {
	return testbundle.New(t, args...)
}
