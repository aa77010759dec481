package native

import (
	"context"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/snapshot"
	"github.com/shim-cri/shim/pkg/snapshot/testsuite"
)

func TestNative(t *testing.T) {
	testsuite.Run(t, func(t *testing.T, root string, db *bbolt.DB) snapshot.Snapshotter {
		s, err := New(context.Background(), root, db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
