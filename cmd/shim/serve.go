package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/shim-cri/shim/internal/memtrim"
	"github.com/shim-cri/shim/pkg/config"
	"github.com/shim-cri/shim/pkg/daemon"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor/cmon"
)

var serveCommand = &cli.Command{
	Name:  "serve",
	Usage: "serve the CRI (the default command)",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "config", Value: config.DefaultFile, Usage: "config file; drop-ins are read from config.d next to it"},
		&cli.StringFlag{Name: "root", Usage: "persistent data directory (config: root)"},
		&cli.StringFlag{Name: "state", Usage: "runtime state directory (config: state)"},
		&cli.StringFlag{Name: "listen", Usage: "CRI address: unix://PATH, tcp://HOST:PORT or fd://[N] (config: listen)"},
		&cli.StringFlag{Name: "registry-config", Usage: "hosts.toml directory (config: image.registry_config)"},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error (config: log_level)"},
		&cli.StringFlag{Name: "log-format", Usage: "text or json (config: log_format)"},
		&cli.StringFlag{Name: "metrics", Usage: "TCP address for /metrics (config: metrics)"},
		&cli.StringFlag{Name: "snapshotter", Usage: "overlay or native (config: image.snapshotter)"},
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if n := raiseProcs(); n > 0 {
			log.G(ctx).Infof("GOMAXPROCS raised to %d on %d CPUs (GOMAXPROCS in the environment sets it)", n, runtime.NumCPU())
		}
		d, err := daemon.New(ctx, cfg, daemon.Options{Version: version(), RuntimeBinary: embeddedRuntime, InitBinary: embeddedInit})
		if err != nil {
			return err
		}
		// What start-up allocated and no longer uses goes back to the
		// kernel (a collection now, which also reads the stacks' maps
		// of the binary), then the binary's pages start-up mapped.
		debug.FreeOSMemory()
		cmon.DropText()
		// And again after each burst of work, once it is over.
		go memtrim.Run(ctx, time.Second, &memtrim.Policy{Burst: 16 << 20, Growth: 8 << 20, Quiet: 256 << 10}, func() {
			debug.FreeOSMemory()
			cmon.DropText()
			log.G(ctx).Debug("burst over: free heap and code pages returned")
		})
		log.G(ctx).Infof("serving CRI on %s", d.Address())
		return d.Serve(ctx)
	},
}

// minProcs is the fewest Ps (goroutines running at once) the daemon runs
// with on a small node. Go's scheduler takes the P of a thread that
// spends more than 20-40 µs in a system call and hands it to another
// thread when goroutines wait. A pull's page-cache writes (50 µs for 128
// KiB here) and flushes are such calls, but on a node of 2 CPUs the write
// is CPU work that leaves no CPU for the new thread: with 2 Ps the
// hand-offs and their thread wake-ups cost a pull of 8 × 4 MiB about 10
// ms of CPU and 5-9% of its time (docs/benchmarks.md, "Buffers, writes
// and Ps"). With more Ps a thread in a system call keeps its P while
// other Ps are idle, and the kernel shares the CPUs between the threads
// instead.
const minProcs = 4

// raiseProcs applies procsFor: it returns the GOMAXPROCS it set, or 0.
func raiseProcs() int {
	_, set := os.LookupEnv("GOMAXPROCS")
	n := procsFor(set, runtime.GOMAXPROCS(0), runtime.NumCPU())
	if n > 0 {
		runtime.GOMAXPROCS(n)
	}
	return n
}

// procsFor is the GOMAXPROCS the daemon sets, or 0 to leave Go's: minProcs
// when the node has fewer CPUs and Go chose one P per CPU, unless the
// environment set it. A CPU quota that made Go choose fewer Ps than CPUs
// is left alone (more threads would only be throttled sooner); setting
// it stops Go's own updates when the quota changes, which a node without
// one does not miss.
func procsFor(envSet bool, cur, ncpu int) int {
	if envSet || ncpu >= minProcs || cur != ncpu {
		return 0
	}
	return minProcs
}

// loadConfig reads the config file and applies the flags over it.
func loadConfig(c *cli.Context) (*config.Config, error) {
	path := c.String("config")
	cfg, unknown, err := config.Load(path, !c.IsSet("config"))
	if err != nil {
		return nil, err
	}
	set := func(flag string, dst *string) {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
	set("root", &cfg.Root)
	set("state", &cfg.State)
	set("listen", &cfg.Listen)
	set("registry-config", &cfg.Image.RegistryConfig)
	set("log-level", &cfg.LogLevel)
	set("log-format", &cfg.LogFormat)
	set("metrics", &cfg.Metrics)
	set("snapshotter", &cfg.Image.Snapshotter)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := setupLogging(cfg); err != nil {
		return nil, err
	}
	for _, k := range unknown {
		logrus.Warnf("config: unknown key %s", k)
	}
	return cfg, nil
}

func setupLogging(cfg *config.Config) error {
	lvl, err := logrus.ParseLevel(cfg.LogLevel)
	if err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	logrus.SetLevel(lvl)
	logrus.SetOutput(os.Stderr)
	if cfg.LogFormat == "json" {
		logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: "2006-01-02T15:04:05.000000000Z07:00"})
	} else {
		logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000000Z07:00"})
	}
	return nil
}
