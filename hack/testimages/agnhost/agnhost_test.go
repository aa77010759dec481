package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// The tests run the real binary, as a container would.
var agnhostBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agnhost-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agnhostBin = filepath.Join(dir, "agnhost")
	if out, err := exec.Command("go", "build", "-o", agnhostBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(agnhostBin, args...).CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exitErr):
		return string(out), exitErr.ExitCode()
	}
	t.Fatal(err)
	return "", -1
}

func TestUnknownSubcommand(t *testing.T) {
	out, code := run(t, "serve-hostname")
	if code != 1 || !strings.Contains(out, `unknown subcommand "serve-hostname"`) {
		t.Errorf("exit %d, output %q", code, out)
	}
}

func TestEntrypointTester(t *testing.T) {
	out, code := run(t, "entrypoint-tester", "override", "arguments")
	if want := "[" + agnhostBin + " entrypoint-tester override arguments]\n"; code != 0 || out != want {
		t.Errorf("exit %d, output %q, want %q", code, out, want)
	}
}

func TestMounttest(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "new")
	out, code := run(t, "mounttest", "--fs_type=/dev/shm", "--new_file_0660="+f, "--file_mode="+f, "--file_perm="+f,
		"--file_owner", f, "--file_content="+f)
	want := fmt.Sprintf(`mount type of "/dev/shm": tmpfs
content of file %[1]q: mount-tester new file

mode of file %[1]q: -rw-rw----
perms of file %[1]q: -rw-rw----
owner UID of %[1]q: %[2]d
owner GID of %[1]q: %[3]d
content of file %[1]q: mount-tester new file

`, f, os.Getuid(), os.Getgid())
	if code != 0 || out != want {
		t.Errorf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
	// The new file has exactly the asked mode: the umask is cleared.
	if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("new file: %v, %v", fi.Mode(), err)
	}
}

func TestMounttestFailure(t *testing.T) {
	out, code := run(t, "mounttest", "--file_content=/nonexistent/x", "--file_mode=/")
	if code != 1 || !strings.Contains(out, `error reading file content for "/nonexistent/x"`) || !strings.Contains(out, `mode of file "/": drwx`) {
		t.Errorf("exit %d, output %q", code, out)
	}
}

func TestMounttestLoop(t *testing.T) {
	f := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(f, []byte("value-1"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Without break_on_expected_content it reads until the retry time.
	out, code := run(t, "mounttest", "--break_on_expected_content=false", "--retry_time=1", "--file_content_in_loop="+f)
	if code != 0 || out != fmt.Sprintf("content of file %q: value-1\n", f) {
		t.Errorf("exit %d, output %q", code, out)
	}
}

func TestPauseSignals(t *testing.T) {
	for sig, wantCode := range map[syscall.Signal]int{syscall.SIGTERM: 2, syscall.SIGINT: 1} {
		msgFile := filepath.Join(t.TempDir(), "termination-log")
		cmd := exec.Command(agnhostBin, "pause")
		cmd.Env = append(os.Environ(), "TERMINATION_MESSAGE_PATH="+msgFile)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if n, _ := stdout.Read(buf); !strings.HasPrefix("Paused\nSignals registered\n", string(buf[:n])) || n == 0 {
			t.Fatalf("first output %q", buf[:n])
		}
		// Wait until the signal handler is installed.
		for !strings.Contains(string(buf), "Signals registered") {
			n, err := stdout.Read(buf)
			if err != nil || n == 0 {
				t.Fatal("no 'Signals registered'")
			}
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(stdout)
		err = cmd.Wait()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != wantCode {
			t.Errorf("%v: exit %v, want %d", sig, err, wantCode)
		}
		want := fmt.Sprintf("exiting because of signal %q\n", sig.String())
		if b, err := os.ReadFile(msgFile); err != nil || string(b) != want || !strings.HasSuffix(string(rest), want) {
			t.Errorf("%v: termination message %q (%v), output %q, want %q", sig, b, err, rest, want)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs a server subcommand until the test ends.
func start(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(agnhostBin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	var err error
	for i := 0; i < 100; i++ {
		var resp *http.Response
		if resp, err = http.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, err)
	return 0, ""
}

func TestNetexec(t *testing.T) {
	httpPort, udpPort := freePort(t), freePort(t)
	start(t, "netexec", "--http-port", strconv.Itoa(httpPort), "--udp-port="+strconv.Itoa(udpPort))
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	host, _ := os.Hostname()

	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	for _, c := range []struct {
		path, want string
		code       int
	}{
		{"/echo?msg=poststart", "poststart", 200},
		{"/echo?msg=gone&code=404", "gone", 404},
		{"/hostname", host, 200},
		{"/hostName", host, 200},
		{"/serverport", strconv.Itoa(httpPort), 200},
		{"/readyz", "ok", 200},
		{"/envvar?var=NO_SUCH_VARIABLE_HERE", "env var \"NO_SUCH_VARIABLE_HERE\" is not set\n", 500},
		{"/shell?cmd=echo+hi", `{"output":"hi\n"}`, 200},
		// /dial over HTTP and UDP, back to this same server.
		{fmt.Sprintf("/dial?host=127.0.0.1&port=%d&request=hostname&protocol=http&tries=2", httpPort),
			fmt.Sprintf(`{"responses":[%q,%q]}`, host, host), 200},
		{fmt.Sprintf("/dial?host=127.0.0.1&port=%d&request=echo%%20hello&protocol=udp", udpPort), `{"responses":["hello"]}`, 200},
		{fmt.Sprintf("/dial?host=127.0.0.1&port=%d&request=hostname&protocol=udp", udpPort), fmt.Sprintf(`{"responses":[%q]}`, host), 200},
		{"/dial?host=127.0.0.1&port=1&request=x&protocol=sctp", "unsupported protocol. sctp\n", 400},
	} {
		if code, body := get(t, base+c.path); code != c.code || body != c.want {
			t.Errorf("%s: %d %q, want %d %q", c.path, code, body, c.code, c.want)
		}
	}
	// A dial that cannot connect reports the error, not a response.
	code, body := get(t, fmt.Sprintf("%s/dial?host=127.0.0.1&port=%d&request=hostname", base, freePort(t)))
	var out map[string][]string
	if err := json.Unmarshal([]byte(body), &out); code != 200 || err != nil || len(out["errors"]) != 1 || len(out["responses"]) != 0 {
		t.Errorf("dial to a closed port: %d %q", code, body)
	}
}

func TestNetexecRefusesSCTP(t *testing.T) {
	if out, code := run(t, "netexec", "--sctp-port=9999"); code != 1 || !strings.Contains(out, "SCTP is not implemented") {
		t.Errorf("exit %d, output %q", code, out)
	}
}

func TestTestWebserver(t *testing.T) {
	port := freePort(t)
	start(t, "test-webserver", "--port="+strconv.Itoa(port))
	f, err := os.CreateTemp("", "webserver-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	fmt.Fprint(f, "served")
	f.Close()
	if code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, f.Name())); code != 200 || body != "served" {
		t.Errorf("%d %q", code, body)
	}
}

func TestGRPCHealthChecking(t *testing.T) {
	port, httpPort := freePort(t), freePort(t)
	start(t, "grpc-health-checking", "--port", strconv.Itoa(port), "--http-port", strconv.Itoa(httpPort), "--service=svc")
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := grpc_health_v1.NewHealthClient(conn)
	check := func(svc string) (grpc_health_v1.HealthCheckResponse_ServingStatus, error) {
		var resp *grpc_health_v1.HealthCheckResponse
		var err error
		for i := 0; i < 100; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err = hc.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: svc})
			cancel()
			if status.Code(err) != codes.Unavailable {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		return resp.GetStatus(), err
	}
	if st, err := check("svc"); err != nil || st != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("svc: %v %v", st, err)
	}
	if _, err := check("other"); status.Code(err) != codes.NotFound {
		t.Errorf("other service: %v", err)
	}
	if code, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/make-not-serving", httpPort)); code != 200 {
		t.Fatalf("make-not-serving: %d", code)
	}
	if st, err := check("svc"); err != nil || st != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		t.Errorf("after make-not-serving: %v %v", st, err)
	}
}
