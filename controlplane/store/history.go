package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// Entry is one applied change, as the history records it. Its Ops hold
// each resource before and after, which is enough to undo it.
type Entry struct {
	// Seq numbers the change; the key is /<prefix>/history/<seq>.
	Seq int64 `json:"seq"`
	// Revision is the etcd revision of the change (the create revision of
	// the entry's key, which the change's transaction wrote).
	Revision   int64     `json:"revision"`
	Author     string    `json:"author,omitempty"`
	Time       time.Time `json:"time"`
	Action     string    `json:"action,omitempty"`
	Message    string    `json:"message,omitempty"`
	RollbackTo int64     `json:"rollback_to,omitempty"`
	Ops        []Op      `json:"ops"`
}

func decodeEntry(kv []byte, createRev int64) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(kv, &e); err != nil {
		return e, err
	}
	e.Revision = createRev
	return e, nil
}

// History returns the latest limit changes, newest first (limit <= 0: all
// that are kept).
func (s *Store) History(ctx context.Context, limit int) ([]Entry, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.cli.Get(ctx, s.keys.HistoryPrefix(), opts...)
	if err != nil {
		return nil, fmt.Errorf("reading history: %w", err)
	}
	return decodeEntries(s.keys.HistoryPrefix(), resp.Kvs), nil
}

// Entry returns the change written at an etcd revision.
func (s *Store) Entry(ctx context.Context, rev int64) (Entry, error) {
	entries, err := s.historySince(ctx, rev-1)
	if err != nil {
		return Entry{}, err
	}
	for _, e := range entries {
		if e.Revision == rev {
			return e, nil
		}
	}
	return Entry{}, &NotFoundError{What: "change at revision " + strconv.FormatInt(rev, 10)}
}

// ActionUnreadable is the action of a history entry whose stored value
// does not decode: it is listed with its number and revision, and a
// rollback cannot cross it.
const ActionUnreadable = "unreadable"

// decodeEntries decodes history entries under prefix. One that does not
// decode is kept as an ActionUnreadable entry, so that the rest of the
// history stays readable.
func decodeEntries(prefix string, kvs []*mvccpb.KeyValue) []Entry {
	out := make([]Entry, 0, len(kvs))
	for _, kv := range kvs {
		e, err := decodeEntry(kv.Value, kv.CreateRevision)
		if err != nil || len(kv.Value) > MaxResourceBytes {
			seq, _ := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), prefix), 10, 64)
			why := "too large"
			if err != nil {
				why = err.Error()
			}
			e = Entry{Seq: seq, Revision: kv.CreateRevision, Action: ActionUnreadable, Message: "the stored entry cannot be read: " + why}
		}
		out = append(out, e)
	}
	return out
}

// historySince returns the changes written after rev, oldest first.
func (s *Store) historySince(ctx context.Context, rev int64) ([]Entry, error) {
	resp, err := s.cli.Get(ctx, s.keys.HistoryPrefix(), clientv3.WithPrefix(), clientv3.WithMinCreateRev(rev+1),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("reading history: %w", err)
	}
	return decodeEntries(s.keys.HistoryPrefix(), resp.Kvs), nil
}

// Rollback returns the configuration to what it was after the change made
// at etcd revision rev (a revision History lists), as a new change
// (recorded in the history like any other). It needs the history of every
// change after rev; a revision at which no change was made is an error
// that matches ErrNotFound.
func (s *Store) Rollback(ctx context.Context, rev int64, ch Change) (*Result, error) {
	if rev <= 0 {
		return nil, &ValidationError{Errors: []FieldError{{Path: "revision", Message: "must be a positive revision"}}}
	}
	// The changes from rev on: the first must be the change made at rev.
	// A revision at which no change was made names no configuration the
	// history shows, so it is refused rather than rounded.
	entries, err := s.historySince(ctx, rev-1)
	if err != nil {
		return nil, err
	}
	if len(entries) > 0 && entries[0].Revision != rev {
		if first := entries[0].Seq; first > 1 {
			resp, err := s.cli.Get(ctx, s.keys.History(first-1), clientv3.WithCountOnly())
			if err != nil {
				return nil, fmt.Errorf("reading history: %w", err)
			}
			if resp.Count == 0 {
				return nil, &ValidationError{Errors: []FieldError{{Path: "revision",
					Message: fmt.Sprintf("the history no longer reaches back to revision %d (the oldest kept change is at revision %d)", rev, entries[0].Revision)}}}
			}
		}
	}
	if len(entries) == 0 || entries[0].Revision != rev {
		return nil, &NotFoundError{What: fmt.Sprintf("change at revision %d", rev)}
	}
	entries = entries[1:]
	if len(entries) == 0 {
		// Nothing changed since rev: the configuration is already there.
		ch.Put, ch.Delete = resource.Set{}, nil
		return s.Apply(ctx, ch)
	}
	// Walking back from the newest change, the last "before" seen for a
	// resource is its value at rev.
	state := map[resource.Ref]json.RawMessage{}
	touched := map[resource.Ref]bool{}
	for _, e := range entries {
		if e.Action == ActionUnreadable {
			return nil, &ValidationError{Errors: []FieldError{{Path: "revision",
				Message: fmt.Sprintf("history change %d (revision %d) is unreadable, so what it changed is unknown: roll back to a revision after it", e.Seq, e.Revision)}}}
		}
	}
	for _, e := range slices.Backward(entries) {
		for _, op := range e.Ops {
			r, err := resource.ParseRef(op.Resource)
			if err != nil {
				return nil, fmt.Errorf("history change %d: %w", e.Seq, err)
			}
			state[r] = op.Before
			touched[r] = true
		}
	}
	ch.Put = resource.Set{}
	ch.Delete = nil
	ch.MissingOK = true
	for r := range touched {
		b := state[r]
		if len(b) == 0 || string(b) == "null" {
			ch.Delete = append(ch.Delete, r)
			continue
		}
		v, err := resource.Decode(r, b)
		if err != nil {
			return nil, fmt.Errorf("history value of %s: %w", r, err)
		}
		ch.Put[r] = v
	}
	resource.SortRefs(ch.Delete)
	if ch.Action == "" {
		ch.Action = "rollback"
	}
	if ch.Message == "" {
		ch.Message = "rollback to revision " + strconv.FormatInt(rev, 10)
	}
	ch.rollbackTo = rev
	return s.Apply(ctx, ch)
}
