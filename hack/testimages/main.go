// Command testimages builds the container images shim's tests and critest
// pull, and pushes them to a registry on loopback (see hack/registry.sh).
// The images are byte-reproducible: re-running pushes the same digests.
//
//	go run ./hack/testimages --registry 127.0.0.1:5000
//
// Every image and its references are listed in images.go (k8s.go for the
// node e2e images); the layers they are made of in layers.go; the C programs
// in c/; the agnhost stand-in in agnhost/.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		log.G(ctx).WithError(err).Error("testimages failed")
		os.Exit(1)
	}
}

func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "shim-testimages")
	}
	return filepath.Join(os.TempDir(), "shim-testimages-cache")
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("testimages", flag.ContinueOnError)
	registry := fs.String("registry", "127.0.0.1:5000", "registry (host:port, plain HTTP) to push to")
	dryRun := fs.Bool("dry-run", false, "build every image and print its digest, push nothing")
	cacheDir := fs.String("cache-dir", defaultCacheDir(), "where the downloaded Debian packages (busybox, netcat-openbsd) are kept")
	busybox := fs.String("busybox", "", "busybox binary to use instead of Debian's dynamically linked one (its shell must not run applets in-process)")
	host := defaultHostPrograms
	fs.StringVar(&host.ipcs, "ipcs", host.ipcs, "util-linux ipcs to copy into the busybox image")
	fs.StringVar(&host.ipcmk, "ipcmk", host.ipcmk, "util-linux ipcmk to copy into the ipc-utils image")
	fs.StringVar(&host.bash, "bash", host.bash, "bash to copy into the agnhost image")
	fs.StringVar(&host.curl, "curl", host.curl, "curl to copy into the agnhost image")
	cc := fs.String("cc", "gcc", "C compiler for c/*.c (linked -static)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q: %w", fs.Args(), errdefs.ErrInvalidArgument)
	}

	in, err := gatherInputs(ctx, *busybox, *cacheDir, *cc, host)
	if err != nil {
		return err
	}
	b, err := newBuilder(ctx, in)
	if err != nil {
		return err
	}

	out := tabwriter.NewWriter(os.Stdout, 0, 8, 1, ' ', 0)
	defer out.Flush()
	for _, def := range images() {
		img, err := b.build(def)
		if err != nil {
			return err
		}
		if *dryRun {
			d, err := img.digest()
			if err != nil {
				return err
			}
			for _, ref := range def.refs {
				fmt.Fprintf(out, "%s\t%s\n", ref, d)
			}
			continue
		}
		results, err := push(ctx, *registry, img)
		for _, r := range results {
			status := "pushed"
			if !r.changed {
				status = "unchanged"
			}
			fmt.Fprintf(out, "%s\t%s@%s\t%s\n", r.ref, r.target, r.digest, status)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
