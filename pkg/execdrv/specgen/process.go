package specgen

import (
	"bytes"
	"os"
	"path"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultPath is PATH for images that set none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// mergeArgs merges the CRI command/args with the image's Entrypoint/Cmd
// as kubelet documents: command replaces Entrypoint and drops Cmd; args
// alone replace Cmd.
func mergeArgs(command, args, entrypoint, cmd []string) ([]string, error) {
	var out []string
	switch {
	case len(command) > 0:
		out = append(append(out, command...), args...)
	case len(args) > 0:
		out = append(append(out, entrypoint...), args...)
	default:
		out = append(append(out, entrypoint...), cmd...)
	}
	if len(out) == 0 || out[0] == "" {
		return nil, inval("no command: neither the container config nor the image gives one")
	}
	for _, a := range out {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, inval("command argument %q contains a NUL byte", a)
		}
	}
	return out, nil
}

func envKey(kv string) string {
	k, _, _ := strings.Cut(kv, "=")
	return k
}

// mergeEnv builds the environment: HOSTNAME, then the image's variables,
// then the config's, each overriding earlier ones by key; PATH defaults to
// DefaultPath and TERM to xterm with a terminal.
func mergeEnv(hostname string, image []string, config []*runtimeapi.KeyValue, tty bool) ([]string, error) {
	var env []string
	idx := map[string]int{}
	set := func(kv string) {
		k := envKey(kv)
		if i, ok := idx[k]; ok {
			env[i] = kv
			return
		}
		idx[k] = len(env)
		env = append(env, kv)
	}
	if hostname != "" {
		set("HOSTNAME=" + hostname)
	}
	for _, kv := range image {
		if kv == "" {
			continue
		}
		if strings.IndexByte(kv, 0) >= 0 || strings.HasPrefix(kv, "=") {
			return nil, inval("image environment entry %q", kv)
		}
		set(kv)
	}
	for _, kv := range config {
		if err := checkEnvKey(kv.GetKey()); err != nil {
			return nil, err
		}
		if bytes.IndexByte(kv.GetValue(), 0) >= 0 {
			return nil, inval("environment variable %s: value contains a NUL byte", kv.GetKey())
		}
		set(kv.GetKey() + "=" + string(kv.GetValue()))
	}
	if _, ok := idx["PATH"]; !ok {
		set("PATH=" + DefaultPath)
	}
	if _, ok := idx["TERM"]; !ok && tty {
		set("TERM=xterm")
	}
	return env, nil
}

func checkEnvKey(k string) error {
	if k == "" || strings.ContainsAny(k, "=\x00") {
		return inval("environment variable name %q", k)
	}
	return nil
}

// workingDir is the config's, else the image's, else "/". A relative image
// WorkingDir is taken from "/", as Docker does.
func workingDir(config, image string) string {
	switch {
	case config != "":
		return path.Clean(config)
	case image != "":
		return path.Clean("/" + image)
	}
	return "/"
}

// podHostname is the pod's hostname; a host-network pod, or one that gives
// none, has the node's.
func podHostname(cfg *runtimeapi.PodSandboxConfig, o Options) string {
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() != runtimeapi.NamespaceMode_NODE {
		if h := cfg.GetHostname(); h != "" {
			return h
		}
	}
	if o.NodeHostname != "" {
		return o.NodeHostname
	}
	h, _ := os.Hostname()
	return h
}
