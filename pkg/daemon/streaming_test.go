package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/internal/streamtest"
	"github.com/shim-cri/shim/pkg/engine"
	"github.com/shim-cri/shim/pkg/log"
)

// transports are the two protocols of the streaming server: SPDY (what
// kubelet proxies kubectl's sessions with) and WebSocket. The server (the
// k8s.io/cri-streaming library kubelet and containerd use) speaks the
// WebSocket channel protocols up to v4; v5, kubectl's, ends at the API
// server, which speaks SPDY onwards.
var transports = []string{"spdy", "websocket"}

const wsProtocolV4 = "v4.channel.k8s.io"

func executor(t *testing.T, rawURL, transport string) remotecommand.Executor {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "127.0.0.1" {
		t.Fatalf("streaming URL %s is not on loopback", rawURL)
	}
	var e remotecommand.Executor
	if transport == "websocket" {
		e, err = remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{}, "GET", rawURL, wsProtocolV4)
	} else {
		e, err = remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// exitCode is the exit code in a stream's error: 0 for none, -1 when the
// error is not an exit.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return ee.ExitStatus()
	}
	return -1
}

func (d *daemonProc) execURL(t *testing.T, req *runtimeapi.ExecRequest) string {
	t.Helper()
	r, err := d.rs.Exec(bg, req)
	if err != nil {
		t.Fatalf("exec %v: %v", req.Cmd, err)
	}
	return r.Url
}

// execStream runs cmd in ctr through the streaming server.
func (d *daemonProc) execStream(t *testing.T, ctx context.Context, ctr, transport string, tty bool, stdin io.Reader,
	stdout, stderr io.Writer, sizes remotecommand.TerminalSizeQueue, cmd ...string) error {
	t.Helper()
	u := d.execURL(t, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: cmd, Tty: tty, Stdin: stdin != nil,
		Stdout: stdout != nil, Stderr: stderr != nil})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // a broken stream fails the test, not hangs it
	defer cancel()
	return executor(t, u, transport).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout,
		Stderr: stderr, Tty: tty, TerminalSizeQueue: sizes})
}

// lateReader gives r after a delay: the terminal size, sent when the
// stream starts, is set by then.
type lateReader struct {
	r     io.Reader
	delay time.Duration
	once  sync.Once
}

func (l *lateReader) Read(p []byte) (int, error) {
	l.once.Do(func() { time.Sleep(l.delay) })
	return l.r.Read(p)
}

// send writes data to a stream's stdin (a pipe: the write returns when the
// client has read it), failing when the stream ended first.
func send(t *testing.T, w io.Writer, data string, done <-chan error) {
	t.Helper()
	wrote := make(chan error, 1)
	go func() { _, err := w.Write([]byte(data)); wrote <- err }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-done:
		t.Fatalf("the stream ended before its input was read: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the stream does not read its input")
	}
}

func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamingPod runs a pod with a long-running container and returns the
// pod and container ids.
func streamingPod(t *testing.T, d *daemonProc, img, name string, logs string) (string, string, *runtimeapi.PodSandboxConfig) {
	pc := podConfig(name, logs)
	pod := d.runPod(t, pc)
	c := d.create(t, pod, pc, ctrConfig("app", img, "sleep", "100000"))
	d.startCtr(t, c)
	return pod, c, pc
}

// cleanNetwork removes the bridge and nftables table of a test's daemon
// when the test ends.
func cleanNetwork(t *testing.T, bridge string) {
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", bridge).Run()
		exec.Command("nft", "delete", "table", "ip", bridge).Run()
	})
}

func TestStreamingExec(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimts", "10.213.79.0/24"))
	cleanNetwork(t, "shimts")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	_, ctr, _ := streamingPod(t, d, img, "exec", e.logs)
	ctx := context.Background()

	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			// stdout, stderr and the exit code; a non-zero exit is an exit.
			var out, errb bytes.Buffer
			err := d.execStream(t, ctx, ctr, tr, false, nil, &out, &errb, nil, "sh", "-c", "echo out; echo err >&2; exit 3")
			if exitCode(err) != 3 || out.String() != "out\n" || errb.String() != "err\n" {
				t.Errorf("exec: %v (code %d), out %q, err %q", err, exitCode(err), out.String(), errb.String())
			}
			// stdin, and the environment and user of the container.
			// (WebSocket v4 cannot tell the end of stdin: only SPDY
			// reads to EOF.)
			out.Reset()
			script := "cat; id -u; echo $PATH"
			if tr == "websocket" {
				script = "head -n 2; id -u; echo $PATH"
			}
			err = d.execStream(t, ctx, ctr, tr, false, strings.NewReader("line1\nline2\n"), &out, nil, nil, "sh", "-c", script)
			if err != nil || out.String() != "line1\nline2\n0\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" {
				t.Errorf("exec with stdin: %v, out %q", err, out.String())
			}
			// A terminal: the client's size, input and output.
			out.Reset()
			err = d.execStream(t, ctx, ctr, tr, true, &lateReader{r: strings.NewReader("hello\n"), delay: 300 * time.Millisecond}, &out, nil, &streamtest.OneSize{},
				"sh", "-c", "read x; stty size; tty; echo got:$x; exit 7")
			if exitCode(err) != 7 || !strings.Contains(out.String(), "30 90") || !strings.Contains(out.String(), "/dev/pts/") ||
				!strings.Contains(out.String(), "got:hello") {
				t.Errorf("exec with a tty: %v, out %q", err, out.String())
			}
			// An unknown command fails the exec, as an exit (126/127) or an error.
			err = d.execStream(t, ctx, ctr, tr, false, nil, &out, &errb, nil, "no-such-command")
			if err == nil {
				t.Errorf("exec of a missing command succeeded")
			}
		})
	}

	t.Run("100MiB", func(t *testing.T) {
		h := sha256.New()
		var errb bytes.Buffer
		start := time.Now()
		err := d.execStream(t, ctx, ctr, "spdy", false, nil, h, &errb, nil, "sh", "-c",
			"head -c 104857600 /dev/urandom > /tmp/big && sha256sum /tmp/big >&2 && cat /tmp/big && rm /tmp/big")
		if err != nil {
			t.Fatalf("exec: %v (%s)", err, errb.String())
		}
		want, _, _ := strings.Cut(errb.String(), " ")
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Errorf("sha256 of the streamed output %s, in the container %q", got, want)
		}
		t.Logf("100 MiB through exec in %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out bytes.Buffer
				tr := transports[i%2]
				err := d.execStream(t, ctx, ctr, tr, false, strings.NewReader(fmt.Sprintf("%d\n", i)), &out, nil, nil,
					"sh", "-c", "sleep 0.2; read x; echo n=$x; exit $((x % 3))")
				if exitCode(err) != i%3 || out.String() != fmt.Sprintf("n=%d\n", i) {
					errs <- fmt.Errorf("exec %d (%s): %v, out %q", i, tr, err, out.String())
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, req := range []*runtimeapi.ExecRequest{
			{ContainerId: "nope", Cmd: []string{"true"}, Stdout: true},
			{ContainerId: ctr, Cmd: nil, Stdout: true},
			{ContainerId: ctr, Cmd: []string{"true"}, Tty: true, Stderr: true, Stdout: true},
			{ContainerId: ctr, Cmd: []string{"true"}},
		} {
			if _, err := d.rs.Exec(bg, req); err == nil {
				t.Errorf("exec %+v accepted", req)
			}
		}
		if _, err := d.rs.PortForward(bg, &runtimeapi.PortForwardRequest{PodSandboxId: "nope"}); err == nil {
			t.Error("port-forward to an unknown pod accepted")
		}
	})

	t.Run("container stops", func(t *testing.T) {
		pc := podConfig("exec-stop", e.logs)
		pod := d.runPod(t, pc)
		c := d.create(t, pod, pc, ctrConfig("app", img, "sleep", "100000"))
		d.startCtr(t, c)
		done := make(chan error, 1)
		var out streamtest.SyncBuffer
		go func() {
			done <- d.execStream(t, ctx, c, "spdy", false, nil, &out, nil, nil, "sh", "-c", "echo started; exec sleep 1000")
		}()
		waitUntil(t, "the exec to start", func() bool { return strings.Contains(out.String(), "started") })
		if _, err := d.rs.StopContainer(bg, &runtimeapi.StopContainerRequest{ContainerId: c, Timeout: 0}); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if exitCode(err) != 137 {
				t.Errorf("exec in a stopped container: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the exec did not end with its container")
		}
	})
	d.removeAllPods(t)
	d.stop(t)
}

func TestStreamingAttach(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimta", "10.213.78.0/24"))
	cleanNetwork(t, "shimta")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			pc := podConfig("attach-"+tr, e.logs)
			pod := d.runPod(t, pc)
			cc := ctrConfig("app", img, "sh", "-c",
				`while read l; do [ "$l" = quit ] && exit 4; echo out:$l; echo err:$l >&2; done; exit 4`)
			cc.Stdin, cc.StdinOnce = true, true
			c := d.create(t, pod, pc, cc)
			d.startCtr(t, c)
			// An attach without stdin leaves the stdin of a stdin_once
			// container open. WebSocket opens a stdin channel all the
			// same, which reads EOF at once: taken for the client's
			// stdin, it closed the container's stdin when no attach with
			// stdin held it yet.
			actx, acancel := context.WithCancel(bg)
			done0 := make(chan error, 1)
			go func() { done0 <- d.attachCtx(actx, t, c, tr, false, nil, io.Discard, nil) }()
			var job engine.JobInfo
			waitUntil(t, "the attach without stdin", func() bool {
				var ok bool
				job, ok = attachJob(t, e, c)
				return ok && slices.ContainsFunc(job.Log, func(l string) bool { return strings.HasSuffix(l, " attached") })
			})
			if job.Args["stdin"] != "false" {
				t.Errorf("an attach without stdin got a stdin: %v", job.Args)
			}
			acancel()
			<-done0
			waitUntil(t, "the end of the attach without stdin", func() bool {
				j, _ := attachJob(t, e, c)
				return j.Status != engine.StatusRunning
			})
			// A second attacher without stdin sees the same output.
			var o2, e2 streamtest.SyncBuffer
			done2 := make(chan error, 1)
			go func() { done2 <- d.attach(t, c, tr, false, nil, &o2, &e2) }()
			pr, pw := io.Pipe()
			var o1, e1 streamtest.SyncBuffer
			done1 := make(chan error, 1)
			go func() { done1 <- d.attach(t, c, tr, false, pr, &o1, &e1) }()
			// The second attacher may attach late: lines go on until it
			// sees one.
			var sent []string
			waitUntil(t, "the output of both attachments", func() bool {
				l := fmt.Sprintf("b%d", len(sent))
				send(t, pw, l+"\n", done1)
				sent = append(sent, l)
				time.Sleep(50 * time.Millisecond)
				return strings.Contains(o2.String(), "out:b") && strings.Contains(e2.String(), "err:b")
			})
			if tr == "spdy" {
				pw.Close() // stdin_once: the container's stdin closes, sh ends
			} else {
				send(t, pw, "quit\n", done1) // WebSocket v4 cannot tell the end of stdin
			}
			for _, done := range []chan error{done1, done2} {
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("attach: %v", err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("attach did not end with the container")
				}
			}
			if st := d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 4 {
				t.Errorf("exit code %d", st.ExitCode)
			}
			var want, wantErr string
			for _, l := range sent {
				want += "out:" + l + "\n"
				wantErr += "err:" + l + "\n"
			}
			if o1.String() != want || e1.String() != wantErr || !strings.HasSuffix(o2.String(), "out:"+sent[len(sent)-1]+"\n") {
				t.Errorf("attach output: %q %q / %q %q", o1.String(), e1.String(), o2.String(), e2.String())
			}
			log := readLog(t, e, pc, "app")
			for _, l := range sent {
				if !strings.Contains(log, " stdout F out:"+l+"\n") || !strings.Contains(log, " stderr F err:"+l+"\n") {
					t.Errorf("the log while attached lacks %s:\n%s", l, log)
				}
			}
			if _, err := d.rs.Attach(bg, &runtimeapi.AttachRequest{ContainerId: c, Stdout: true}); err == nil {
				t.Error("attach to an exited container accepted")
			}
		})
	}

	t.Run("tty", func(t *testing.T) {
		pc := podConfig("attach-tty", e.logs)
		pod := d.runPod(t, pc)
		cc := ctrConfig("app", img, "sh")
		cc.Stdin, cc.StdinOnce, cc.Tty = true, true, true
		c := d.create(t, pod, pc, cc)
		d.startCtr(t, c)
		// kubectl run -it: attach with a terminal, type, leave with exit.
		pr, pw := io.Pipe()
		var out streamtest.SyncBuffer
		done := make(chan error, 1)
		go func() { done <- d.attach(t, c, "websocket", true, pr, &out, nil) }()
		time.Sleep(300 * time.Millisecond) // the terminal size is set meanwhile
		send(t, pw, "stty size; echo mark-$((6*7))\n", done)
		waitUntil(t, "the shell", func() bool { return strings.Contains(out.String(), "mark-42") })
		if !strings.Contains(out.String(), "30 90") {
			t.Errorf("terminal size: %q", out.String())
		}
		send(t, pw, "exit 5\n", done)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("attach: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("attach did not end with the container")
		}
		if st := d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 5 {
			t.Errorf("exit code %d", st.ExitCode)
		}
		if log := readLog(t, e, pc, "app"); !strings.Contains(log, " stdout F mark-42\r\n") {
			t.Errorf("log of a tty container:\n%s", log)
		}
	})
	d.removeAllPods(t)
	d.stop(t)
}

// attach attaches to ctr through the streaming server.
func (d *daemonProc) attach(t *testing.T, ctr, transport string, tty bool, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return d.attachCtx(ctx, t, ctr, transport, tty, stdin, stdout, stderr)
}

// attachCtx is attach until ctx ends.
func (d *daemonProc) attachCtx(ctx context.Context, t *testing.T, ctr, transport string, tty bool, stdin io.Reader,
	stdout, stderr io.Writer) error {
	r, err := d.rs.Attach(bg, &runtimeapi.AttachRequest{ContainerId: ctr, Stdin: stdin != nil, Stdout: stdout != nil,
		Stderr: stderr != nil, Tty: tty})
	if err != nil {
		return err
	}
	var sizes remotecommand.TerminalSizeQueue
	if tty {
		sizes = &streamtest.OneSize{}
	}
	return executor(t, r.Url, transport).StreamWithContext(ctx, remotecommand.StreamOptions{
		Stdin: stdin, Stdout: stdout, Stderr: stderr, Tty: tty, TerminalSizeQueue: sizes})
}

// attachJob is the newest attach session of ctr, from the daemon's /jobs.
func attachJob(t *testing.T, e *testEnv, ctr string) (engine.JobInfo, bool) {
	t.Helper()
	for _, j := range jobList(t, e.admin(), "?name=attach_stream") { // newest first
		if j.Args[log.FieldContainerID] == ctr {
			return j, true
		}
	}
	return engine.JobInfo{}, false
}

func readLog(t *testing.T, e *testEnv, pc *runtimeapi.PodSandboxConfig, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pc.LogDirectory, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStreamingPortForward(t *testing.T) {
	e := newTestEnv(t, bridgeConfig("shimtp", "10.213.77.0/24"))
	cleanNetwork(t, "shimtp")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	serve := func(pc *runtimeapi.PodSandboxConfig, port int) {
		pod := d.runPod(t, pc)
		c := d.create(t, pod, pc, ctrConfig("web", img, "sh", "-c", fmt.Sprintf(
			"mkdir -p /www && echo hello-pf > /www/index.html && exec httpd -f -p 127.0.0.1:%d -h /www", port)))
		d.startCtr(t, c)
	}
	pc := podConfig("pf", e.logs)
	serve(pc, 8080)
	host := podConfig("pf-host", e.logs)
	host.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	hostPort := freePort(t)
	serve(host, hostPort)
	for _, tr := range transports {
		for _, p := range []struct {
			name string
			pc   *runtimeapi.PodSandboxConfig
			port int
		}{{"pod", pc, 8080}, {"host-network", host, hostPort}} {
			t.Run(tr+"/"+p.name, func(t *testing.T) {
				pods, err := d.rs.ListPodSandbox(bg, &runtimeapi.ListPodSandboxRequest{})
				if err != nil {
					t.Fatal(err)
				}
				id := ""
				for _, it := range pods.Items {
					if it.Metadata.Name == p.pc.Metadata.Name {
						id = it.Id
					}
				}
				waitUntil(t, "the web server", func() bool {
					_, err := wsPortForwardGet(t, d, id, p.port)
					return err == nil
				})
				if tr == "websocket" {
					checkWSPortForward(t, d, id, p.port)
				} else {
					checkPortForward(t, d, id, p.port)
				}
			})
		}
	}
	d.removeAllPods(t)
	d.stop(t)
}

// checkPortForward forwards a local port to port of pod and fetches the
// page through it with 10 connections at once.
func checkPortForward(t *testing.T, d *daemonProc, pod string, port int) {
	r, err := d.rs.PortForward(bg, &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: []int32{int32(port)}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(r.Url)
	rt, up, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialerForStreaming(up, &http.Client{Transport: rt}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	var out, errOut streamtest.SyncBuffer
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-fwdDone:
		t.Fatalf("port-forward: %v %s", err, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("port-forward not ready")
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("ports %v %v", ports, err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", ports[0].Local))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "hello-pf\n" {
				errs <- fmt.Errorf("page %q", b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("through the port-forward: %v (%s)", err, errOut.String())
	}
	close(stop)
	select {
	case err := <-fwdDone:
		if err != nil {
			t.Errorf("port-forward ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("port-forward did not end")
	}
}

// freePort is a TCP port free on the host's loopback.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// wsPortForwardGet fetches /index.html from port of pod over a WebSocket
// port-forward (the v4 channel protocol: one connection per session;
// channel 0 carries the data, 1 the errors, each first with the port).
func wsPortForwardGet(t *testing.T, d *daemonProc, pod string, port int) (string, error) {
	r, err := d.rs.PortForward(bg, &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: []int32{int32(port)}})
	if err != nil {
		return "", err
	}
	wsURL := "ws" + strings.TrimPrefix(r.Url, "http")
	dialer := websocket.Dialer{Subprotocols: []string{wsProtocolV4}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := dialer.Dial(wsURL, nil)
	if err != nil {
		return "", err
	}
	defer ws.Close()
	req := "GET /index.html HTTP/1.0\r\n\r\n"
	if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, req...)); err != nil {
		return "", err
	}
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	var data, errs bytes.Buffer
	seen := map[byte]bool{}
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			break
		}
		if len(msg) == 0 {
			continue
		}
		ch, body := msg[0], msg[1:]
		if !seen[ch] && len(body) >= 2 {
			seen[ch] = true // the port, first on each channel
			body = body[2:]
		}
		if ch == 0 {
			data.Write(body)
		} else {
			errs.Write(body)
		}
	}
	if errs.Len() > 0 {
		return "", fmt.Errorf("port-forward error: %s", errs.String())
	}
	resp := data.String()
	if !strings.HasPrefix(resp, "HTTP/1.") {
		return "", fmt.Errorf("no HTTP response: %q", resp)
	}
	_, body, _ := strings.Cut(resp, "\r\n\r\n")
	return body, nil
}

// checkWSPortForward fetches the page over 10 WebSocket port-forwards at once.
func checkWSPortForward(t *testing.T, d *daemonProc, pod string, port int) {
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := wsPortForwardGet(t, d, pod, port)
			if err == nil && body != "hello-pf\n" {
				err = fmt.Errorf("page %q", body)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("websocket port-forward: %v", err)
	}
}
