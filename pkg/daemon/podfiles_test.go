package daemon

import (
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodFilesCannotFillState: a root container can write its /etc/hosts,
// /etc/resolv.conf and /etc/hostname (programs add lines to /etc/hosts),
// but cannot grow them without bound: they are files of the daemon's state
// directory, and filling them would fill the host's /run.
func TestPodFilesCannotFillState(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	before := residue(t, e, d)
	pc := podConfig("files", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	c := d.create(t, pod, pc, ctrConfig("writer", img, "sleep", "1000"))
	d.startCtr(t, c)

	sh := func(script string) (string, int32) {
		t.Helper()
		r, err := d.rs.ExecSync(bg, &runtimeapi.ExecSyncRequest{ContainerId: c, Cmd: []string{"sh", "-c", script}, Timeout: 60})
		if err != nil {
			t.Fatalf("exec %q: %v", script, err)
		}
		return strings.TrimSpace(string(r.Stdout) + string(r.Stderr)), r.ExitCode
	}
	if out, code := sh("echo '10.0.0.5 db' >> /etc/hosts && grep -c db /etc/hosts"); code != 0 || out != "1" {
		t.Fatalf("adding a line to /etc/hosts: %q, exit %d", out, code)
	}
	const fill = 64 << 20
	for _, f := range []string{"/etc/resolv.conf", "/etc/hosts", "/etc/hostname"} {
		out, code := sh("head -c " + strconv.Itoa(fill) + " /dev/zero >> " + f)
		if code == 0 {
			t.Errorf("writing %d bytes to %s succeeded: %s", fill, f, out)
		}
		size, _ := sh("wc -c < " + f)
		if n, err := strconv.Atoi(size); err != nil || n > 4<<20 {
			t.Errorf("%s grew to %q bytes", f, size)
		}
	}
	d.removeAllPods(t)
	if r := residue(t, e, d); r != before {
		t.Errorf("left behind:\n%s", r)
	}
	d.stop(t)
}
