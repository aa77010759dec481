package daemon

import (
	"context"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerEvents: GetContainerEvents streams CREATED, STARTED,
// STOPPED and DELETED with the pod's status, as kubelet's evented PLEG
// expects.
func TestContainerEvents(t *testing.T) {
	e := newTestEnv(t, "[network]\ndriver = \"none\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	d := e.start()
	d.pull(t, img)
	ctx, cancel := context.WithTimeout(bg, time.Minute)
	defer cancel()
	stream, err := d.rs.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // subscribed
		t.Fatal(err)
	}
	events := make(chan *runtimeapi.ContainerEventResponse, 16)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()

	pc := podConfig("ev", e.logs)
	pc.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	pod := d.runPod(t, pc)
	c := d.create(t, pod, pc, ctrConfig("e", img, "sh", "-c", "exit 4"))
	d.startCtr(t, c)
	d.waitState(t, c, runtimeapi.ContainerState_CONTAINER_EXITED)
	if _, err := d.rs.RemoveContainer(bg, &runtimeapi.RemoveContainerRequest{ContainerId: c}); err != nil {
		t.Fatal(err)
	}
	want := []runtimeapi.ContainerEventType{
		runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
	}
	for _, w := range want {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended before %v", w)
			}
			if ev.ContainerEventType != w || ev.ContainerId != c {
				t.Fatalf("got %v for %s, want %v for %s", ev.ContainerEventType, ev.ContainerId, w, c)
			}
			if ev.PodSandboxStatus.GetId() != pod || ev.CreatedAt == 0 {
				t.Errorf("%v: pod status %v", w, ev.PodSandboxStatus)
			}
			var found bool
			for _, st := range ev.ContainersStatuses {
				if st.Id == c {
					found = true
					if w == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT && st.ExitCode != 4 {
						t.Errorf("stopped event: exit code %d", st.ExitCode)
					}
				}
			}
			if !found {
				t.Errorf("%v: the container's status is not in the event", w)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %v event", w)
		}
	}
	d.removeAllPods(t)
	cancel()
	d.stop(t)
}
