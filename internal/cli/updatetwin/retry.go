package updatetwin

import (
	"context"
	"math/rand/v2"
	"time"
)

// A write that lost a race with another writer (412) is retried against a
// fresh read after a jittered, exponentially growing pause, so that
// writers contending for one twin spread out instead of colliding again at
// once. Retries stop when the next pause would end past --retry-timeout.
const (
	defaultRetryTimeout = time.Minute
	firstRetryDelay     = 50 * time.Millisecond
	maxRetryDelay       = 2 * time.Second
)

// backoff yields the pauses between retries: each a random duration in
// [d/2, d], with d doubling from firstRetryDelay up to maxRetryDelay.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = firstRetryDelay
	}
	pause := b.d/2 + rand.N(b.d/2+1)
	b.d = min(2*b.d, maxRetryDelay)
	return pause
}

// sleep waits for d or until ctx is done, and reports whether the whole
// pause passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
