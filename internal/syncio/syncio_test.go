package syncio_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/moduletwin/iothub-module-twin/internal/syncio"
)

func TestConcurrentLinesStayWhole(t *testing.T) {
	var buf syncio.Buffer
	w := &syncio.Writer{W: &buf}
	line := strings.Repeat("x", 100) + "\n"
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := w.Write([]byte(line)); err != nil {
					t.Error(err)
				}
				_ = buf.String() // reads while others write
			}
		})
	}
	wg.Wait()
	got := buf.String()
	if want := strings.Repeat(line, 800); got != want {
		t.Errorf("got %d bytes, %d whole lines; want %d lines", len(got), strings.Count(got, line), 800)
	}
}
