// Package store is the emulator's durable key-value store: buckets of
// records in a bbolt file, written by one goroutine that commits queued
// changes in groups so that concurrent writers share each fsync.
//
// Changes are applied in the order they were queued, and a change's
// callback runs after the change is on disk (or failed) and before its
// waiter is released, in queue order.
//
// A failed commit halts the store: the changes queued behind it were built
// on top of it, so they fail too, and so does every later change until the
// owner has reloaded its state from the store and called Resume.
package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Op puts Value at Key in Bucket, or deletes Key when Value is nil.
type Op struct {
	Bucket string
	Key    string
	Value  []byte
}

// ErrClosed is returned for changes queued after Close.
var ErrClosed = errors.New("store is closed")

// ErrHalted is returned for changes refused because an earlier commit
// failed (see Halted and Resume).
var ErrHalted = errors.New("store is halted after a failed write")

// maxGroup bounds how many queued changes share one transaction, so that a
// flood of writers still sees steady progress.
const maxGroup = 4096

// Store is a bbolt file, or nothing at all for a throwaway hub.
type Store struct {
	db      *bolt.DB // nil for a memory store
	buckets []string

	mu      sync.Mutex
	queue   []*Pending
	closed  bool
	halted  error         // the failed commit that halted the store
	fault   error         // the next commit fails with it (InjectFault)
	wake    chan struct{} // buffered(1): the writer has work
	stopped chan struct{} // closed when the writer has exited
}

// Pending is a queued change. Wait blocks until it is durable.
type Pending struct {
	ops   []Op
	after func(error)
	done  chan struct{}
	err   error
}

// Wait blocks until the change is on disk and returns the write error.
func (p *Pending) Wait() error {
	<-p.done
	return p.err
}

// Open opens (creating if needed) the bbolt file at path with the given
// buckets. It fails fast when another process holds the file.
func Open(path string, buckets ...string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: in use by another process", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return fmt.Errorf("create bucket %q: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return start(db, buckets), nil
}

// Memory returns a store that keeps nothing: changes are acknowledged
// (in order, with their callbacks) without being written anywhere.
func Memory() *Store { return start(nil, nil) }

func start(db *bolt.DB, buckets []string) *Store {
	s := &Store{db: db, buckets: buckets, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go s.writer()
	return s
}

// Load calls fn for every record of bucket, in key order.
func (s *Store) Load(bucket string, fn func(key string, value []byte) error) error {
	if s.db == nil {
		return nil
	}
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return fmt.Errorf("no bucket %q", bucket)
		}
		return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// Enqueue queues ops as one atomic change and returns at once; call Wait
// on the result for durability. Changes are committed in Enqueue order, so
// callers that hold their own lock while enqueueing get their order kept.
// after, when not nil, runs on the writer goroutine once the change is
// committed (err nil) or failed, before Wait returns; it must not block.
func (s *Store) Enqueue(ops []Op, after func(error)) *Pending {
	p := &Pending{ops: ops, after: after, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		p.finish(ErrClosed)
		return p
	}
	if s.halted != nil {
		err := fmt.Errorf("%w: %v", ErrHalted, s.halted)
		s.mu.Unlock()
		p.finish(err)
		return p
	}
	s.queue = append(s.queue, p)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return p
}

func (p *Pending) finish(err error) {
	p.err = err
	if p.after != nil {
		p.after(err)
	}
	close(p.done)
}

// writer commits queued changes, as many per transaction as are waiting.
func (s *Store) writer() {
	defer close(s.stopped)
	for {
		s.mu.Lock()
		group := s.queue
		if len(group) > maxGroup {
			group = group[:maxGroup:maxGroup]
		}
		s.queue = s.queue[len(group):]
		closed := s.closed
		s.mu.Unlock()
		if len(group) == 0 {
			if closed {
				return
			}
			<-s.wake
			continue
		}
		err := s.commit(group)
		var behind []*Pending
		if err != nil {
			s.mu.Lock()
			s.halted = err
			behind = s.queue
			s.queue = nil
			s.mu.Unlock()
		}
		for _, p := range group {
			p.finish(err)
		}
		for _, p := range behind {
			p.finish(fmt.Errorf("%w: %v", ErrHalted, err))
		}
	}
}

// Halted returns the commit failure that halted the store, or nil.
func (s *Store) Halted() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halted
}

// Resume lets a halted store take changes again. Call it once the state
// built on the failed changes has been dropped, e.g. reloaded with Load.
func (s *Store) Resume() {
	s.mu.Lock()
	s.halted = nil
	s.mu.Unlock()
}

// InjectFault makes the next commit of a file store fail with err, writing
// nothing, as a full disk would. It exists for tests; a memory store never
// fails.
func (s *Store) InjectFault(err error) {
	s.mu.Lock()
	s.fault = err
	s.mu.Unlock()
}

func (s *Store) commit(group []*Pending) error {
	if s.db == nil {
		return nil
	}
	s.mu.Lock()
	fault := s.fault
	s.fault = nil
	s.mu.Unlock()
	if fault != nil {
		return fmt.Errorf("commit: %w", fault)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, p := range group {
			for _, op := range p.ops {
				b := tx.Bucket([]byte(op.Bucket))
				if b == nil {
					return fmt.Errorf("no bucket %q", op.Bucket)
				}
				var err error
				if op.Value == nil {
					err = b.Delete([]byte(op.Key))
				} else {
					err = b.Put([]byte(op.Key), op.Value)
				}
				if err != nil {
					return fmt.Errorf("write %s/%q: %w", op.Bucket, op.Key, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Close commits what is queued, stops the writer and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.stopped
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.stopped
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}
