package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/log"
	"github.com/shim-cri/shim/pkg/monitor"
	"github.com/shim-cri/shim/pkg/netdrv"
	"github.com/shim-cri/shim/pkg/nspin"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// recover loads the records after a start: pods whose state directory is
// gone (a reboot) become NOTREADY and their containers EXITED; running
// pods get their monitors back; leftovers of interrupted work are removed.
func (r *Runtime) recover(ctx context.Context) error {
	sbs, ctrs, err := r.store.load()
	if err != nil {
		return err
	}
	for _, sb := range sbs {
		r.sandboxes[sb.ID] = sb
		r.podNames[sb.Name] = sb.ID
	}
	for _, c := range ctrs {
		if _, ok := r.sandboxes[c.SandboxID]; !ok {
			log.G(ctx).Warnf("container %s belongs to no pod; removing it", c.ID)
			if err := r.cleanContainerLeftovers(ctx, c); err != nil {
				log.G(ctx).WithError(err).Warnf("keeping the record of container %s to retry at the next start", c.ID)
				continue
			}
			r.store.delete(bucketContainers, c.ID)
			continue
		}
		r.containers[c.ID] = c
		if !c.Infra {
			r.ctrNames[c.Name] = c.ID
		}
	}
	rebooted := 0
	for _, sb := range sbs {
		if _, err := os.Stat(sb.Dir); errors.Is(err, os.ErrNotExist) {
			rebooted++
			r.afterReboot(ctx, sb)
			continue
		}
		sock := filepath.Join(sb.Dir, monitor.SocketName)
		c := &monitor.Client{Socket: sock}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := c.Call(cctx, &monitor.Request{Op: monitor.OpState})
		cancel()
		switch {
		case err == nil:
			c.SetState(st)
			r.attachMonitor(sb.ID, c)
			r.reconcilePod(ctx, sb.ID)
			r.dropUnknown(ctx, c, st)
		case monitor.IsGone(err):
			if sb.view().Monitor {
				log.G(ctx).WithField(log.FieldPodID, sb.ID).Warn("the pod's monitor is gone")
			}
			r.monitorGone(ctx, sb.ID)
		default:
			// Slow, not gone: follow it; its events stream retries.
			log.G(ctx).WithError(err).WithField(log.FieldPodID, sb.ID).Warn("the pod's monitor is slow to answer")
			r.attachMonitor(sb.ID, c)
		}
	}
	r.cleanOrphans(ctx)
	log.G(ctx).Infof("recovered %d pods (%d after a reboot) and %d containers", len(r.sandboxes), rebooted, len(r.containers))
	return nil
}

// dropUnknown deletes containers a monitor holds that have no record (a
// crash of the daemon between the monitor's create and the record).
func (r *Runtime) dropUnknown(ctx context.Context, c *monitor.Client, st *monitor.Response) {
	for _, mc := range st.Containers {
		if _, ok := r.containers[mc.ID]; ok {
			continue
		}
		log.G(ctx).WithField(log.FieldContainerID, mc.ID).Info("deleting a container the monitor holds without a record")
		if _, err := c.Call(ctx, &monitor.Request{Op: monitor.OpDelete, ID: mc.ID, Force: true}); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).Warnf("deleting container %s", mc.ID)
		}
	}
}

// afterReboot marks a pod whose state is gone NOTREADY, its containers
// EXITED, and frees what it held outside the state dir (IP addresses).
func (r *Runtime) afterReboot(ctx context.Context, sb *Sandbox) {
	for _, c := range r.podContainers(sb.ID) {
		v := c.view()
		if v.State == ContainerRunning || v.State == ContainerCreated {
			r.updateContainer(c, func(c *Container) {
				c.State, c.ExitCode, c.Reason = ContainerExited, 255, "Unknown"
				c.Message = "the node restarted"
				c.FinishedAt = time.Now()
			})
		}
	}
	if v := sb.view(); v.Network != "" && r.o.Network != nil {
		if err := r.o.Network.Teardown(ctx, r.netPod(sb)); err != nil {
			log.G(ctx).WithError(err).WithField(log.FieldPodID, sb.ID).Warn("releasing the network of a pod after a reboot")
		}
	}
	r.updateSandbox(sb, func(sb *Sandbox) {
		sb.State, sb.IPs, sb.Network, sb.InfraPid = SandboxNotReady, nil, "", 0
	})
}

// cleanContainerLeftovers unmounts and removes a container's files and
// snapshots; nothing when an unmount fails.
func (r *Runtime) cleanContainerLeftovers(ctx context.Context, c *Container) error {
	return r.releaseContainerFiles(ctx, c)
}

// cleanOrphans removes pod directories, pins and container snapshots no
// record refers to (a crash in the middle of a create).
func (r *Runtime) cleanOrphans(ctx context.Context) {
	pods, _ := os.ReadDir(filepath.Join(r.o.State, "pods"))
	for _, p := range pods {
		if _, ok := r.sandboxes[p.Name()]; ok {
			ctrs, _ := os.ReadDir(filepath.Join(r.o.State, "pods", p.Name(), "ctrs"))
			for _, c := range ctrs {
				if _, ok := r.containers[c.Name()]; !ok {
					b := filepath.Join(r.o.State, "pods", p.Name(), "ctrs", c.Name())
					err := unmountBundle(b)
					if err == nil {
						err = removeBundle(b)
					}
					if err != nil {
						log.G(ctx).WithError(err).Warnf("keeping leftover bundle %s", b)
					}
				}
			}
			continue
		}
		dir := filepath.Join(r.o.State, "pods", p.Name())
		log.G(ctx).Infof("removing leftover pod directory %s", dir)
		r.teardownOrphanNetwork(ctx, p.Name())
		if c := (&monitor.Client{Socket: filepath.Join(dir, monitor.SocketName)}); true {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c.Call(cctx, &monitor.Request{Op: monitor.OpShutdown})
			cancel()
		}
		if err := removePodDir(dir); err != nil {
			log.G(ctx).WithError(err).Warnf("keeping leftover pod directory %s", dir)
		}
	}
	pins, _ := os.ReadDir(r.nsDir)
	for _, p := range pins {
		id, _, _ := strings.Cut(p.Name(), "-")
		sb, ok := r.sandboxes[id]
		if !ok || sb.view().State != SandboxReady {
			if !ok && strings.HasSuffix(p.Name(), "-net") {
				r.teardownOrphanNetwork(ctx, id)
			}
			nspin.Unpin(filepath.Join(r.nsDir, p.Name()))
		}
	}
	used := map[string]bool{}
	for _, c := range r.containers {
		used[c.ID] = true
	}
	// A bundle that could not be removed may still have its snapshots
	// mounted: they stay until it is gone.
	if bundles, err := filepath.Glob(filepath.Join(r.o.State, "pods", "*", "ctrs", "*")); err == nil {
		for _, b := range bundles {
			used[filepath.Base(b)] = true
		}
	}
	// Image VOLUME data of containers that have no record (a crash in
	// the middle of a create or a remove).
	vols, _ := os.ReadDir(filepath.Join(r.o.Root, "volumes"))
	for _, v := range vols {
		if !used[v.Name()] {
			if err := r.removeVolumeData(v.Name()); err != nil {
				log.G(ctx).WithError(err).Warnf("removing leftover volume data of container %s", v.Name())
			}
		}
	}
	var stale []string
	r.o.Snapshotter.Walk(ctx, func(_ context.Context, i snapshot.Info) error {
		// ctr-<id> and its image volumes ctr-<id>-vol<n>.
		id, _, _ := strings.Cut(strings.TrimPrefix(i.Key, "ctr-"), "-vol")
		if strings.HasPrefix(i.Key, "ctr-") && !used[id] {
			stale = append(stale, i.Key)
		}
		return nil
	})
	for _, k := range stale {
		if err := r.o.Snapshotter.Remove(ctx, k); err != nil {
			log.G(ctx).WithError(err).Warnf("removing leftover snapshot %s", k)
		}
	}
}

// teardownOrphanNetwork releases the network of a pod that has no record
// (a crash in the middle of RunPodSandbox): its address, host ports, veth.
func (r *Runtime) teardownOrphanNetwork(ctx context.Context, id string) {
	if r.o.Network == nil {
		return
	}
	pod := netdrv.Pod{ID: id, NetNS: filepath.Join(r.nsDir, id+"-"+nspin.Net)}
	if err := r.o.Network.Teardown(ctx, pod); err != nil {
		log.G(ctx).WithError(err).WithField(log.FieldPodID, id).Warn("releasing the network of a leftover pod")
	}
}
