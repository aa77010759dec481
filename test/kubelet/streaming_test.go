package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"github.com/shim-cri/shim/internal/streamtest"
)

// What kubectl exec, attach and port-forward do, against kubelet's own
// server (kubelet asks shim for a streaming URL and proxies the session to
// it): client-go's remotecommand (SPDY and WebSocket) and portforward
// clients, with kubelet's serving certificate.

// restConfig is a client-go config for kubelet's server.
func (n *node) restConfig(t *testing.T) *rest.Config {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(n.dir, "pki", "kubelet.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: ca, ServerName: nodeName}}
}

// stream runs one remotecommand session on kubelet's path (/exec/... or
// /attach/...) with query q.
func (n *node) stream(t *testing.T, ctx context.Context, transport, path string, q url.Values, opts remotecommand.StreamOptions) error {
	t.Helper()
	u, err := url.Parse(n.KubeletURL(path) + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	var e remotecommand.Executor
	if transport == "websocket" {
		e, err = remotecommand.NewWebSocketExecutor(n.restConfig(t), "GET", u.String())
	} else {
		e, err = remotecommand.NewSPDYExecutor(n.restConfig(t), "POST", u)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e.StreamWithContext(ctx, opts)
}

// exitCode is the exit status a remotecommand session reports.
func exitCode(err error) (int, bool) {
	if err == nil {
		return 0, true
	}
	var e interface{ ExitStatus() int }
	if errors.As(err, &e) {
		return e.ExitStatus(), true
	}
	return 0, false
}

func testKubeletExec(t *testing.T, n *node) {
	pod := podName("web")
	for _, tr := range []string{"spdy", "websocket"} {
		t.Run(tr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// stdin through, stdout and stderr apart, the exit code back.
			q := url.Values{"command": {"sh", "-c", "read l; echo out:$l; echo err:$l >&2; exit 7"},
				"input": {"1"}, "output": {"1"}, "error": {"1"}}
			var out, errOut bytes.Buffer
			err := n.stream(t, ctx, tr, "/exec/default/"+pod+"/app", q, remotecommand.StreamOptions{
				Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &errOut})
			if code, ok := exitCode(err); !ok || code != 7 {
				t.Errorf("exec: %v, want exit code 7", err)
			}
			if out.String() != "out:hello\n" || errOut.String() != "err:hello\n" {
				t.Errorf("exec: stdout %q, stderr %q", out.String(), errOut.String())
			}
		})
	}
	t.Run("tty", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// A terminal: stdout and stderr are one stream, the size is the
		// client's, and a shell reads what is typed.
		q := url.Values{"command": {"sh"}, "input": {"1"}, "output": {"1"}, "tty": {"1"}}
		var out streamtest.SyncBuffer
		err := n.stream(t, ctx, "spdy", "/exec/default/"+pod+"/app", q, remotecommand.StreamOptions{
			Stdin: strings.NewReader("stty size; echo tty:$((6*7)) >&2; exit 3\n"), Stdout: &out, Tty: true,
			TerminalSizeQueue: &streamtest.OneSize{}})
		if code, ok := exitCode(err); !ok || code != 3 {
			t.Errorf("tty exec: %v, want exit code 3; output %q", err, out.String())
		}
		if s := out.String(); !strings.Contains(s, "30 90") || !strings.Contains(s, "tty:42") {
			t.Errorf("tty exec output %q: want the size 30 90 and tty:42", s)
		}
	})
}

func testKubeletAttach(t *testing.T, n *node) {
	pod := podName("talker")
	t.Run("stdin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// The container echoes each line it reads on its stdin.
		pr, pw := io.Pipe()
		var out streamtest.SyncBuffer
		done := make(chan error, 1)
		go func() {
			done <- n.stream(t, ctx, "spdy", "/attach/default/"+pod+"/echo",
				url.Values{"input": {"1"}, "output": {"1"}, "error": {"1"}},
				remotecommand.StreamOptions{Stdin: pr, Stdout: &out, Stderr: io.Discard})
		}()
		waitFor(t, "the attached container to answer", 30*time.Second, func() (bool, string) {
			fmt.Fprintln(pw, "ping")
			return strings.Contains(out.String(), "got:ping"), out.String()
		})
		cancel()
		pw.Close()
		<-done
	})
	t.Run("tty", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// kubectl run -it: a shell on the container's terminal.
		pr, pw := io.Pipe()
		var out streamtest.SyncBuffer
		done := make(chan error, 1)
		go func() {
			done <- n.stream(t, ctx, "spdy", "/attach/default/"+pod+"/shell",
				url.Values{"input": {"1"}, "output": {"1"}, "tty": {"1"}},
				remotecommand.StreamOptions{Stdin: pr, Stdout: &out, Tty: true, TerminalSizeQueue: &streamtest.OneSize{}})
		}()
		waitFor(t, "the shell on the terminal to answer", 30*time.Second, func() (bool, string) {
			fmt.Fprintln(pw, "echo sum:$((40+2))")
			return strings.Contains(out.String(), "sum:42"), out.String()
		})
		cancel()
		pw.Close()
		<-done
	})
}

func testKubeletPortForward(t *testing.T, n *node) {
	u, err := url.Parse(n.KubeletURL("/portForward/default/" + podName("web")))
	if err != nil {
		t.Fatal(err)
	}
	rt, up, err := spdy.RoundTripperFor(n.restConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(up, &http.Client{Transport: rt}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	var out, errOut streamtest.SyncBuffer
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:80"}, stop, ready, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	fwd := make(chan error, 1)
	go func() { fwd <- pf.ForwardPorts() }()
	defer func() {
		close(stop)
		if err := <-fwd; err != nil {
			t.Errorf("port-forward ended with %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-fwd:
		t.Fatalf("port-forward: %v %s", err, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("port-forward not ready")
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("forwarded ports %v %v", ports, err)
	}
	// Ten connections at once through one port-forward session.
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", ports[0].Local))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "Welcome to nginx!") {
				errs <- fmt.Errorf("%s: %.200s", resp.Status, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// testKubeletResourceMetrics: kubelet's /metrics/resource (what
// metrics-server and kubectl top read) has CPU and memory for every
// running container of the pods, from shim's ListContainerStats and
// ListPodSandboxStats. (/stats/summary fails here: this test's kubelet
// root is on the host's /dev/vda, which cAdvisor cannot map; the node
// e2e runs, on a filesystem of their own, read it and evict on it.)
func testKubeletResourceMetrics(t *testing.T, n *node) {
	var want []string
	for pod, ns := range map[string]string{"web": "default", "hostnet": "kube-system", "talker": "default"} {
		p := n.pod(t, podName(pod))
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Running == nil {
				continue
			}
			for _, m := range []string{"container_memory_working_set_bytes", "container_cpu_usage_seconds_total"} {
				want = append(want, fmt.Sprintf(`%s{container=%q,namespace=%q,pod=%q}`, m, c.Name, ns, podName(pod)))
			}
		}
		for _, m := range []string{"pod_memory_working_set_bytes", "pod_cpu_usage_seconds_total"} {
			want = append(want, fmt.Sprintf(`%s{namespace=%q,pod=%q}`, m, ns, podName(pod)))
		}
	}
	if len(want) < 3*2+5*2 {
		t.Fatalf("too few running containers to check: %v", want)
	}
	waitFor(t, "kubelet's resource metrics of every running container", 2*time.Minute, func() (bool, string) {
		b, err := n.get("/metrics/resource")
		if err != nil {
			return false, err.Error()
		}
		for _, w := range want {
			i := strings.Index(string(b), w+" ")
			if i < 0 {
				return false, "no " + w
			}
			// The value (then a timestamp): a positive number.
			f := strings.Fields(string(b[i+len(w):]))
			if len(f) == 0 || f[0] == "0" {
				return false, w + " is zero"
			}
		}
		return true, ""
	})
}
