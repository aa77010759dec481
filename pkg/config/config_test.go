package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Root != "/var/lib/shim" || c.Image.Snapshotter != "overlay" || time.Duration(c.ShutdownGrace) != 30*time.Second ||
		c.Streaming.Address != "127.0.0.1:0" || time.Duration(c.Streaming.IdleTimeout) != 4*time.Hour {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestLoadDropInsAndUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	os.WriteFile(main, []byte("root = \"/srv/shim\"\nbogus = 1\n[image]\nmax_concurrent_downloads = 2\n"), 0o600)
	os.MkdirAll(filepath.Join(dir, "config.d"), 0o700)
	os.WriteFile(filepath.Join(dir, "config.d", "20-b.toml"), []byte("[image]\nmax_concurrent_downloads = 8\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "config.d", "10-a.toml"), []byte("[image]\nmax_concurrent_downloads = 5\nsnapshotter = \"native\"\n"), 0o600)
	c, unknown, err := Load(main, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/srv/shim" || c.Image.MaxConcurrentDownloads != 8 || c.Image.Snapshotter != "native" {
		t.Fatalf("got %+v", c)
	}
	if len(unknown) != 1 || filepath.Base(unknown[0]) != "config.toml: bogus" {
		t.Fatalf("unknown keys: %v", unknown)
	}
}

func TestLoadMissing(t *testing.T) {
	if _, _, err := Load(filepath.Join(t.TempDir(), "none.toml"), true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(filepath.Join(t.TempDir(), "none.toml"), false); err == nil {
		t.Fatal("missing explicit config accepted")
	}
}

func TestInvalid(t *testing.T) {
	for _, body := range []string{
		`root = "relative"`,
		`listen = "http://x"`,
		`log_level = "loud"`,
		"[image]\nsnapshotter = \"zfs\"",
		"[image]\nmax_concurrent_downloads = 0",
		"[image]\nmax_unpacked_layer_size = 0",
		"[image]\nmax_unpacked_layer_size = \"lots\"",
		"[image]\nmax_unpacked_layer_size = -5",
		`shutdown_grace = "soon"`,
		"[streaming]\naddress = \"127.0.0.1\"",
		"[streaming]\nidle_timeout = \"0s\"",
		"[streaming.tls]\ncert = \"/etc/cert.pem\"",
	} {
		f := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(f, []byte(body), 0o600)
		if _, _, err := Load(f, false); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: want invalid argument, got %v", body, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	if got := Default().Image.MaxUnpackedLayerSize; got != 64<<30 {
		t.Errorf("default max_unpacked_layer_size %d, want 64 GiB", got)
	}
	for body, want := range map[string]ByteSize{
		"[image]\nmax_unpacked_layer_size = 1048576":    1 << 20,
		"[image]\nmax_unpacked_layer_size = \"512MiB\"": 512 << 20,
		"[image]\nmax_unpacked_layer_size = \"2g\"":     2 << 30,
	} {
		f := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(f, []byte(body), 0o600)
		c, _, err := Load(f, false)
		if err != nil {
			t.Errorf("%q: %v", body, err)
		} else if c.Image.MaxUnpackedLayerSize != want {
			t.Errorf("%q: got %d, want %d", body, c.Image.MaxUnpackedLayerSize, want)
		}
	}
}
