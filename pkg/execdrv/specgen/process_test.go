package specgen

import (
	"reflect"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestMergeArgs(t *testing.T) {
	ep, cmd := []string{"/entry", "-x"}, []string{"cmd-arg"}
	for _, tc := range []struct {
		name                      string
		command, args, entry, img []string
		want                      []string
	}{
		{"image only", nil, nil, ep, cmd, []string{"/entry", "-x", "cmd-arg"}},
		{"image cmd only", nil, nil, nil, []string{"/bin/sh", "-c", "x"}, []string{"/bin/sh", "-c", "x"}},
		{"command replaces entrypoint and drops cmd", []string{"/c"}, nil, ep, cmd, []string{"/c"}},
		{"command and args", []string{"/c"}, []string{"a", "b"}, ep, cmd, []string{"/c", "a", "b"}},
		{"args replace cmd", nil, []string{"a"}, ep, cmd, []string{"/entry", "-x", "a"}},
		{"args without entrypoint", nil, []string{"/bin/echo", "hi"}, nil, cmd, []string{"/bin/echo", "hi"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeArgs(tc.command, tc.args, tc.entry, tc.img)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name                      string
		command, args, entry, img []string
	}{
		{"nothing", nil, nil, nil, nil},
		{"empty program", []string{""}, nil, nil, nil},
		{"NUL in an argument", []string{"/bin/sh", "a\x00b"}, nil, nil, nil},
		{"args only, nothing to run them", nil, []string{""}, nil, nil},
	} {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			_, err := mergeArgs(tc.command, tc.args, tc.entry, tc.img)
			wantClass(t, err, errdefs.ErrInvalidArgument)
		})
	}
}

func kv(k, v string) *runtimeapi.KeyValue { return &runtimeapi.KeyValue{Key: k, Value: []byte(v)} }

func TestMergeEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hostname string
		image    []string
		config   []*runtimeapi.KeyValue
		tty      bool
		want     []string
	}{
		{"default PATH", "h", nil, nil, false, []string{"HOSTNAME=h", "PATH=" + DefaultPath}},
		{"image PATH kept", "h", []string{"PATH=/x", "A=1"}, nil, false, []string{"HOSTNAME=h", "PATH=/x", "A=1"}},
		{"config overrides image by key, in place", "h", []string{"A=1", "B=2"}, []*runtimeapi.KeyValue{kv("A", "9"), kv("C", "3")}, false,
			[]string{"HOSTNAME=h", "A=9", "B=2", "C=3", "PATH=" + DefaultPath}},
		{"image may override HOSTNAME", "h", []string{"HOSTNAME=img"}, nil, false, []string{"HOSTNAME=img", "PATH=" + DefaultPath}},
		{"config may override HOSTNAME", "h", nil, []*runtimeapi.KeyValue{kv("HOSTNAME", "cfg")}, false, []string{"HOSTNAME=cfg", "PATH=" + DefaultPath}},
		{"value with = and newline kept", "h", nil, []*runtimeapi.KeyValue{kv("X", "a=b\nc")}, false, []string{"HOSTNAME=h", "X=a=b\nc", "PATH=" + DefaultPath}},
		{"tty sets TERM", "h", nil, nil, true, []string{"HOSTNAME=h", "PATH=" + DefaultPath, "TERM=xterm"}},
		{"tty keeps TERM", "h", []string{"TERM=vt100"}, nil, true, []string{"HOSTNAME=h", "TERM=vt100", "PATH=" + DefaultPath}},
		{"empty value", "h", nil, []*runtimeapi.KeyValue{kv("E", "")}, false, []string{"HOSTNAME=h", "E=", "PATH=" + DefaultPath}},
		// EnvFrom keys kubelet sends as they are (ConfigMap and Secret keys
		// with prefixes; the node e2e "consumable via the environment"
		// specs): not shell names, but valid environment entries.
		{"names that are not shell names", "h", nil, []*runtimeapi.KeyValue{kv("data-1", "value-1"), kv("1-data-1", "v"), kv("$_-data-1", "v"), kv("#@!data-1", "v"), kv("p.q", "v")}, false,
			[]string{"HOSTNAME=h", "data-1=value-1", "1-data-1=v", "$_-data-1=v", "#@!data-1=v", "p.q=v", "PATH=" + DefaultPath}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeEnv(tc.hostname, tc.image, tc.config, tc.tty)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		image  []string
		config []*runtimeapi.KeyValue
	}{
		{"empty key", nil, []*runtimeapi.KeyValue{kv("", "x")}},
		{"= in key", nil, []*runtimeapi.KeyValue{kv("A=B", "x")}},
		{"NUL in key", nil, []*runtimeapi.KeyValue{kv("A\x00", "x")}},
		{"NUL in value", nil, []*runtimeapi.KeyValue{kv("A", "x\x00y")}},
		{"NUL in image env", []string{"A=\x00"}, nil},
		{"image env without key", []string{"=x"}, nil},
	} {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			_, err := mergeEnv("h", tc.image, tc.config, false)
			wantClass(t, err, errdefs.ErrInvalidArgument)
		})
	}
}

func TestWorkingDir(t *testing.T) {
	for _, tc := range []struct{ config, image, want string }{
		{"", "", "/"},
		{"", "/app", "/app"},
		{"", "app", "/app"},
		{"/cfg/", "/app", "/cfg"},
		{"/a/../b", "", "/b"},
	} {
		if got := workingDir(tc.config, tc.image); got != tc.want {
			t.Errorf("workingDir(%q, %q) = %q, want %q", tc.config, tc.image, got, tc.want)
		}
	}
}

func TestPodHostname(t *testing.T) {
	cfg := &runtimeapi.PodSandboxConfig{Hostname: "pod-h"}
	if got := podHostname(cfg, Options{NodeHostname: "node"}); got != "pod-h" {
		t.Fatalf("pod network: %q", got)
	}
	cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
	if got := podHostname(cfg, Options{NodeHostname: "node"}); got != "node" {
		t.Fatalf("host network: %q", got)
	}
	if got := podHostname(&runtimeapi.PodSandboxConfig{}, Options{NodeHostname: "node"}); got != "node" {
		t.Fatalf("no hostname: %q", got)
	}
}
