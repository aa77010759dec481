package storage

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/snapshot"
)

// Metadata layout, inside the top-level bucket "snapshot.<driver>" of the
// shared meta.db (its sequence numbers the snapshot directories):
//
//	snapshots/<key>           -> JSON record
//	children/<parent>\x00<child> -> "" (index: who has a parent)
var (
	bucketSnapshots = []byte("snapshots")
	bucketChildren  = []byte("children")
)

const maxKeyLen = 1024

// record is the stored form of a snapshot.
type record struct {
	ID      uint64            `json:"id"`
	Kind    snapshot.Kind     `json:"kind"`
	Parent  string            `json:"parent,omitempty"`
	Chain   []uint64          `json:"chain,omitempty"` // ancestor ids, nearest first
	Labels  map[string]string `json:"labels,omitempty"`
	Created time.Time         `json:"created"`
}

func (r *record) info(key string) snapshot.Info {
	return snapshot.Info{
		Key:     key,
		Parent:  r.Parent,
		Kind:    r.Kind,
		ID:      strconv.FormatUint(r.ID, 10),
		Labels:  r.Labels,
		Created: r.Created,
	}
}

func validKey(what, key string) error {
	if key == "" || len(key) > maxKeyLen || strings.IndexByte(key, 0) >= 0 {
		return fmt.Errorf("snapshot %s %q: must be 1-%d bytes without NUL: %w", what, key, maxKeyLen, errdefs.ErrInvalidArgument)
	}
	return nil
}

// mtx wraps one bolt transaction on the driver's bucket.
type mtx struct {
	top      *bbolt.Bucket
	snaps    *bbolt.Bucket
	children *bbolt.Bucket
}

func newMtx(tx *bbolt.Tx, name []byte) (*mtx, error) {
	top := tx.Bucket(name)
	if top == nil {
		return nil, fmt.Errorf("metadata bucket %q missing: %w", name, errdefs.ErrDataLoss)
	}
	return &mtx{top: top, snaps: top.Bucket(bucketSnapshots), children: top.Bucket(bucketChildren)}, nil
}

func initBuckets(tx *bbolt.Tx, name []byte) error {
	top, err := tx.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	if _, err := top.CreateBucketIfNotExists(bucketSnapshots); err != nil {
		return err
	}
	_, err = top.CreateBucketIfNotExists(bucketChildren)
	return err
}

func (m *mtx) get(key string) (*record, error) {
	v := m.snaps.Get([]byte(key))
	if v == nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("snapshot %q: corrupt record: %w: %w", key, err, errdefs.ErrDataLoss)
	}
	return &r, nil
}

func (m *mtx) exists(key string) bool { return m.snaps.Get([]byte(key)) != nil }

func (m *mtx) put(key string, r *record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return m.snaps.Put([]byte(key), v)
}

func childKey(parent, child string) []byte { return []byte(parent + "\x00" + child) }

func (m *mtx) hasChildren(key string) bool {
	prefix := []byte(key + "\x00")
	k, _ := m.children.Cursor().Seek(prefix)
	return k != nil && strings.HasPrefix(string(k), string(prefix))
}

// committedParent returns parent's record, which must be committed.
func (m *mtx) committedParent(parent string) (*record, error) {
	p, err := m.get(parent)
	if err != nil {
		return nil, fmt.Errorf("parent: %w", err)
	}
	if p.Kind != snapshot.KindCommitted {
		return nil, fmt.Errorf("parent %q is %s, not committed: %w", parent, p.Kind, errdefs.ErrFailedPrecondition)
	}
	return p, nil
}

// chain is the ancestor id list of a snapshot whose parent is p.
func chain(p *record) []uint64 {
	if p == nil {
		return nil
	}
	return append([]uint64{p.ID}, p.Chain...)
}

// create adds a new record for key with a fresh id. wantChain, when not
// nil, is the ancestry the caller prepared the directory for: a parent
// replaced in between is reported as ErrAborted.
func (m *mtx) create(key, parent string, kind snapshot.Kind, labels map[string]string, wantChain []uint64) (*record, error) {
	if m.exists(key) {
		return nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrAlreadyExists)
	}
	var p *record
	if parent != "" {
		var err error
		if p, err = m.committedParent(parent); err != nil {
			return nil, err
		}
	}
	c := chain(p)
	if !sameChain(c, wantChain) {
		return nil, fmt.Errorf("parent %q changed while preparing %q: %w", parent, key, errdefs.ErrAborted)
	}
	id, err := m.top.NextSequence()
	if err != nil {
		return nil, err
	}
	r := &record{ID: id, Kind: kind, Parent: parent, Chain: c, Labels: labels, Created: time.Now().UTC()}
	if err := m.put(key, r); err != nil {
		return nil, err
	}
	if parent != "" {
		if err := m.children.Put(childKey(parent, key), nil); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func sameChain(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// remove deletes key's record; it refuses when key has children.
func (m *mtx) remove(key string) (*record, error) {
	r, err := m.get(key)
	if err != nil {
		return nil, err
	}
	if m.hasChildren(key) {
		return nil, fmt.Errorf("snapshot %q has children: %w", key, errdefs.ErrFailedPrecondition)
	}
	if err := m.snaps.Delete([]byte(key)); err != nil {
		return nil, err
	}
	if r.Parent != "" {
		if err := m.children.Delete(childKey(r.Parent, key)); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// commitCheck validates Commit(name, key) and returns key's record, the
// parent the committed snapshot gets (rebase parent or key's own) and that
// parent's record.
func (m *mtx) commitCheck(name, key, rebase string, diffLayers bool) (*record, string, *record, error) {
	r, err := m.get(key)
	if err != nil {
		return nil, "", nil, err
	}
	if r.Kind != snapshot.KindActive {
		return nil, "", nil, fmt.Errorf("commit %q: snapshot is %s, not active: %w", key, r.Kind, errdefs.ErrFailedPrecondition)
	}
	if m.exists(name) {
		return nil, "", nil, fmt.Errorf("commit %q: snapshot %q: %w", key, name, errdefs.ErrAlreadyExists)
	}
	parent := r.Parent
	if rebase != "" && rebase != r.Parent {
		if !diffLayers {
			return nil, "", nil, fmt.Errorf("commit %q onto %q: driver holds full copies and cannot rebase: %w", key, rebase, errdefs.ErrInvalidArgument)
		}
		parent = rebase
	}
	var p *record
	if parent != "" {
		if p, err = m.committedParent(parent); err != nil {
			return nil, "", nil, err
		}
	}
	return r, parent, p, nil
}

// commit moves key's record to name as a committed snapshot. It keeps the
// id, so the directory stays where it is.
func (m *mtx) commit(name, key, rebase string, labels map[string]string, diffLayers bool) (*record, error) {
	r, parent, p, err := m.commitCheck(name, key, rebase, diffLayers)
	if err != nil {
		return nil, err
	}
	if _, err := m.remove(key); err != nil {
		return nil, err
	}
	c := &record{ID: r.ID, Kind: snapshot.KindCommitted, Parent: parent, Chain: chain(p), Labels: r.Labels, Created: time.Now().UTC()}
	if labels != nil {
		c.Labels = labels
	}
	if err := m.put(name, c); err != nil {
		return nil, err
	}
	if parent != "" {
		if err := m.children.Put(childKey(parent, name), nil); err != nil {
			return nil, err
		}
	}
	return c, nil
}
