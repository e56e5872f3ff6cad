package store_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/store"
)

func load(t *testing.T, s *store.Store, bucket string) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := s.Load(bucket, func(k string, v []byte) error {
		got[k] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestWritesSurviveReopenInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := store.Open(path, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	// Many writers on the same key: the last one queued wins, even though
	// several share a transaction.
	var pending []*store.Pending
	for i := range 500 {
		pending = append(pending, s.Enqueue([]store.Op{
			{Bucket: "a", Key: "same", Value: []byte(fmt.Sprint(i))},
			{Bucket: "b", Key: fmt.Sprintf("k%03d", i), Value: []byte("v")},
		}, nil))
	}
	pending = append(pending, s.Enqueue([]store.Op{{Bucket: "b", Key: "k000"}}, nil)) // delete
	for _, p := range pending {
		if err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(path, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := load(t, s, "a"); got["same"] != "499" {
		t.Errorf("a/same = %q; want 499 (the last write)", got["same"])
	}
	b := load(t, s, "b")
	if len(b) != 499 || b["k000"] != "" || b["k499"] != "v" {
		t.Errorf("bucket b has %d keys (k000=%q); want 499 without k000", len(b), b["k000"])
	}
}

func TestCallbacksRunInQueueOrderBeforeWaitReturns(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) *store.Store{
		"file": func(t *testing.T) *store.Store {
			s, err := store.Open(filepath.Join(t.TempDir(), "db"), "a")
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"memory": func(*testing.T) *store.Store { return store.Memory() },
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			var mu sync.Mutex
			var order []int
			var queueMu sync.Mutex // callers serialize Enqueue, as the hub does
			var wg sync.WaitGroup
			next := 0
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 50 {
						queueMu.Lock()
						i := next
						next++
						done := false
						p := s.Enqueue([]store.Op{{Bucket: "a", Key: "k", Value: []byte("v")}}, func(err error) {
							if err != nil {
								t.Errorf("write %d: %v", i, err)
							}
							mu.Lock()
							order = append(order, i)
							mu.Unlock()
							done = true
						})
						queueMu.Unlock()
						if err := p.Wait(); err != nil {
							t.Error(err)
						}
						if !done {
							t.Errorf("Wait returned before the callback of %d ran", i)
						}
					}
				}()
			}
			wg.Wait()
			want := make([]int, 400)
			for i := range want {
				want[i] = i
			}
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(want, order); diff != "" {
				t.Errorf("callback order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCloseFlushesAndRefusesLaterWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := store.Open(path, "a")
	if err != nil {
		t.Fatal(err)
	}
	p := s.Enqueue([]store.Op{{Bucket: "a", Key: "k", Value: []byte("v")}}, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("write queued before Close: %v", err)
	}
	if err := s.Enqueue([]store.Op{{Bucket: "a", Key: "k2", Value: []byte("v")}}, nil).Wait(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("write after Close = %v; want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	s, err = store.Open(path, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := load(t, s, "a"); got["k"] != "v" || got["k2"] != "" {
		t.Errorf("after reopen = %v; want only k", got)
	}
}

func TestOpenFailsWhileAnotherHoldsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := store.Open(path, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := store.Open(path, "a"); err == nil {
		s2.Close()
		t.Fatal("second Open of the same file succeeded")
	}
}

func TestUnknownBucketFailsTheWrite(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "db"), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Enqueue([]store.Op{{Bucket: "nope", Key: "k", Value: []byte("v")}}, nil).Wait(); err == nil {
		t.Error("write to an unknown bucket succeeded")
	}
	if err := s.Load("nope", func(string, []byte) error { return nil }); err == nil {
		t.Error("Load of an unknown bucket succeeded")
	}
}

func TestFailedCommitHaltsUntilResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := store.Open(path, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	disk := errors.New("disk full")
	s.InjectFault(disk)
	failed := s.Enqueue([]store.Op{{Bucket: "a", Key: "k1", Value: []byte("v")}}, nil)
	behind := s.Enqueue([]store.Op{{Bucket: "a", Key: "k2", Value: []byte("v")}}, nil)
	if err := failed.Wait(); !errors.Is(err, disk) {
		t.Errorf("failed write = %v; want the injected fault", err)
	}
	if err := behind.Wait(); err == nil {
		t.Error("a write queued behind a failed one succeeded")
	}
	if err := s.Halted(); !errors.Is(err, disk) {
		t.Errorf("Halted() = %v; want the injected fault", err)
	}
	if err := s.Enqueue([]store.Op{{Bucket: "a", Key: "k3", Value: []byte("v")}}, nil).Wait(); !errors.Is(err, store.ErrHalted) {
		t.Errorf("write while halted = %v; want ErrHalted", err)
	}
	if got := load(t, s, "a"); len(got) != 0 {
		t.Errorf("after the failure the store holds %v; want nothing", got)
	}
	s.Resume()
	if err := s.Halted(); err != nil {
		t.Errorf("Halted() after Resume = %v", err)
	}
	if err := s.Enqueue([]store.Op{{Bucket: "a", Key: "k4", Value: []byte("v")}}, nil).Wait(); err != nil {
		t.Fatalf("write after Resume: %v", err)
	}
	if got := load(t, s, "a"); len(got) != 1 || got["k4"] != "v" {
		t.Errorf("store holds %v; want only k4", got)
	}
}
