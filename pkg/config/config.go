// Package config is shim's configuration: a TOML file plus drop-ins,
// applied over the defaults in code. Every key is documented in the file
// `shim config default` prints (default.toml, embedded).
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	units "github.com/docker/go-units"

	"github.com/shim-cri/shim/pkg/errdefs"
)

// DefaultFile is where shim looks for its configuration.
const DefaultFile = "/etc/shim/config.toml"

//go:embed default.toml
var defaultTOML string

// DefaultTOML is the commented default configuration.
func DefaultTOML() string { return defaultTOML }

// Duration is a time.Duration written as "30s" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText renders the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// ByteSize is a size in bytes, written as an integer or as "64GiB",
// "512MiB", "10g" (binary units, case-insensitive) in TOML.
type ByteSize int64

// UnmarshalTOML accepts an integer or a size string.
func (b *ByteSize) UnmarshalTOML(v any) error {
	switch t := v.(type) {
	case int64:
		*b = ByteSize(t)
		return nil
	case string:
		n, err := units.RAMInBytes(t)
		if err != nil {
			return err
		}
		*b = ByteSize(n)
		return nil
	}
	return fmt.Errorf("size: want an integer or a string such as \"64GiB\", got %T", v)
}

// MarshalText renders the size in bytes.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(b), 10)), nil }

// Config is the whole configuration.
type Config struct {
	Root          string    `toml:"root"`
	State         string    `toml:"state"`
	Listen        string    `toml:"listen"`
	LogLevel      string    `toml:"log_level"`
	LogFormat     string    `toml:"log_format"`
	Metrics       string    `toml:"metrics"`
	ShutdownGrace Duration  `toml:"shutdown_grace"`
	JobHistory    int       `toml:"job_history"`
	TLS           TLS       `toml:"tls"`
	Image         Image     `toml:"image"`
	Network       Network   `toml:"network"`
	Runtime       Runtime   `toml:"runtime"`
	Stats         Stats     `toml:"stats"`
	Streaming     Streaming `toml:"streaming"`
}

// Stats configures container statistics.
type Stats struct {
	// ContainerMetrics adds every pod's and container's cAdvisor-style
	// metrics (those of ListPodSandboxMetrics) to /metrics.
	ContainerMetrics bool `toml:"container_metrics"`
}

// Streaming configures the CRI streaming server.
type Streaming struct {
	Address     string       `toml:"address"` // host:port; port 0 picks one
	TLS         StreamingTLS `toml:"tls"`
	IdleTimeout Duration     `toml:"idle_timeout"`
}

// StreamingTLS is the streaming server's certificate; both empty: HTTP.
type StreamingTLS struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// Network configures pod networking.
type Network struct {
	Driver     string   `toml:"driver"` // bridge, cni or none
	Bridge     string   `toml:"bridge"`
	PodCIDR    string   `toml:"pod_cidr"`
	MTU        int      `toml:"mtu"`
	NFTTable   string   `toml:"nft_table"`
	VethPrefix string   `toml:"veth_prefix"`
	CNIConfDir string   `toml:"cni_conf_dir"`
	CNIBinDirs []string `toml:"cni_bin_dirs"`
}

// Runtime configures how containers run.
type Runtime struct {
	// Handlers maps RuntimeClass handler names to an OCI runtime binary;
	// "native" (or empty) is shim's own executor.
	Handlers map[string]Handler `toml:"handlers"`
	// SeccompDefault applies RuntimeDefault to containers without a
	// seccomp profile (kubelet's --seccomp-default).
	SeccompDefault bool `toml:"seccomp_default"`
	// AppArmorDefaultProfile is the AppArmor profile of RuntimeDefault
	// (and of containers that name none), used when the host has it
	// loaded; otherwise such containers run unconfined.
	AppArmorDefaultProfile string `toml:"apparmor_default_profile"`
}

// Handler is one RuntimeClass handler.
type Handler struct {
	Binary string `toml:"binary"`
}

// TLS configures the tcp:// listener; mutual TLS is required there.
type TLS struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
	CA   string `toml:"ca"`
}

// Image configures the image store.
type Image struct {
	RegistryConfig         string   `toml:"registry_config"`
	Snapshotter            string   `toml:"snapshotter"`
	MaxConcurrentDownloads int      `toml:"max_concurrent_downloads"`
	SandboxImage           string   `toml:"sandbox_image"`
	PinnedImages           []string `toml:"pinned_images"`
	IngestExpiry           Duration `toml:"ingest_expiry"`
	// MaxUnpackedLayerSize caps the uncompressed bytes of one layer.
	MaxUnpackedLayerSize ByteSize `toml:"max_unpacked_layer_size"`
	// KeepLayerBlobs keeps each layer's compressed blob in the content
	// store after it is unpacked.
	KeepLayerBlobs bool `toml:"keep_layer_blobs"`
}

// Default is the configuration with nothing set.
func Default() *Config {
	c := &Config{}
	if _, err := toml.Decode(defaultTOML, c); err != nil {
		panic("config: default.toml: " + err.Error())
	}
	return c
}

// Load reads path (a missing file is fine when missing is true) and then
// every *.toml in the drop-in directory next to it (<dir>/config.d), in
// name order, each over the last. It returns the keys it did not know.
func Load(path string, missingOK bool) (*Config, []string, error) {
	c := Default()
	var unknown []string
	files := []string{path}
	dropins, err := filepath.Glob(filepath.Join(filepath.Dir(path), "config.d", "*.toml"))
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(dropins)
	files = append(files, dropins...)
	for i, f := range files {
		data, err := os.ReadFile(f)
		if i == 0 && missingOK && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("config: %w", err)
		}
		md, err := toml.Decode(string(data), c)
		if err != nil {
			return nil, nil, fmt.Errorf("config %s: %w: %w", f, err, errdefs.ErrInvalidArgument)
		}
		for _, k := range md.Undecoded() {
			unknown = append(unknown, f+": "+k.String())
		}
	}
	return c, unknown, c.Validate()
}

// Validate checks the values.
func (c *Config) Validate() error {
	var errs []string
	if !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Sprintf("root %q must be an absolute path", c.Root))
	}
	if !filepath.IsAbs(c.State) {
		errs = append(errs, fmt.Sprintf("state %q must be an absolute path", c.State))
	}
	if !strings.HasPrefix(c.Listen, "unix://") && !strings.HasPrefix(c.Listen, "tcp://") && !strings.HasPrefix(c.Listen, "fd://") {
		errs = append(errs, fmt.Sprintf("listen %q: want unix://PATH, tcp://HOST:PORT or fd://[N]", c.Listen))
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic":
	default:
		errs = append(errs, fmt.Sprintf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Sprintf("log_format %q: want text or json", c.LogFormat))
	}
	switch c.Image.Snapshotter {
	case "overlay", "native":
	default:
		errs = append(errs, fmt.Sprintf("image.snapshotter %q: want overlay or native", c.Image.Snapshotter))
	}
	if c.Image.MaxConcurrentDownloads < 1 || c.Image.MaxConcurrentDownloads > 64 {
		errs = append(errs, fmt.Sprintf("image.max_concurrent_downloads %d: want 1 to 64", c.Image.MaxConcurrentDownloads))
	}
	if c.Image.MaxUnpackedLayerSize <= 0 {
		errs = append(errs, fmt.Sprintf("image.max_unpacked_layer_size %d: must be positive", c.Image.MaxUnpackedLayerSize))
	}
	switch c.Network.Driver {
	case "bridge", "cni", "none":
	default:
		errs = append(errs, fmt.Sprintf("network.driver %q: want bridge, cni or none", c.Network.Driver))
	}
	for name, h := range c.Runtime.Handlers {
		if name == "" || (h.Binary != "" && h.Binary != "native" && !filepath.IsAbs(h.Binary)) {
			errs = append(errs, fmt.Sprintf("runtime.handlers.%s: binary %q must be \"native\" or an absolute path", name, h.Binary))
		}
	}
	if _, _, err := net.SplitHostPort(c.Streaming.Address); err != nil {
		errs = append(errs, fmt.Sprintf("streaming.address %q: want HOST:PORT", c.Streaming.Address))
	}
	if (c.Streaming.TLS.Cert == "") != (c.Streaming.TLS.Key == "") {
		errs = append(errs, "streaming.tls: set both cert and key, or neither")
	}
	if c.Streaming.IdleTimeout <= 0 {
		errs = append(errs, "streaming.idle_timeout must be positive")
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, "shutdown_grace must not be negative")
	}
	if c.JobHistory < 0 {
		errs = append(errs, "job_history must not be negative")
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %s: %w", strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
	}
	return nil
}
