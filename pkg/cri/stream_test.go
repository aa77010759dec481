package cri

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestSendChunks(t *testing.T) {
	mk := func(n int, size int) []*runtimeapi.Container {
		out := make([]*runtimeapi.Container, n)
		for i := range out {
			out[i] = &runtimeapi.Container{Id: strings.Repeat("x", size) + string(rune('a'+i%26))}
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		items    []*runtimeapi.Container
		wantMsgs int
	}{
		{"none", nil, 0},
		{"one", mk(1, 1), 1},
		{"count", mk(2*streamChunk+1, 1), 3},
		{"bytes", mk(10, 1<<20), 4}, // 4 MiB per message: 3 + 3 + 3 + 1 items of 1 MiB
		{"one huge item", mk(1, 8<<20), 1},
	} {
		var msgs [][]*runtimeapi.Container
		if err := sendChunks(tc.items, func(c []*runtimeapi.Container) error {
			msgs = append(msgs, c)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var all []*runtimeapi.Container
		for _, m := range msgs {
			if len(m) == 0 || len(m) > streamChunk {
				t.Errorf("%s: a message of %d items", tc.name, len(m))
			}
			all = append(all, m...)
		}
		if len(all) != len(tc.items) {
			t.Errorf("%s: %d items sent, want %d", tc.name, len(all), len(tc.items))
		}
		for i := range all {
			if all[i] != tc.items[i] {
				t.Errorf("%s: item %d out of order or repeated", tc.name, i)
			}
		}
		if len(msgs) != tc.wantMsgs {
			t.Errorf("%s: %d messages, want %d", tc.name, len(msgs), tc.wantMsgs)
		}
	}
}
