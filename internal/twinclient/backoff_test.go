package twinclient

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	c := &Client{cfg: config{minBackoff: 100 * time.Millisecond, maxBackoff: time.Second}}
	tests := []struct {
		failures int
		lo, hi   time.Duration
	}{
		{0, 0, 0},
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second}, // capped
		{50, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if got := c.backoff(tt.failures); got < tt.lo || got > tt.hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tt.failures, got, tt.lo, tt.hi)
			}
		}
	}
}
