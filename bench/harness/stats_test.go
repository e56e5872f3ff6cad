package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	var samples []float64
	for i := 100; i >= 1; i-- {
		samples = append(samples, float64(i))
	}
	got := summarize(samples)
	want := Summary{N: 100, Median: 50.5, P90: 90, P99: 99, Min: 1, Max: 100, Mean: 50.5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summarize(1..100) mismatch (-want +got):\n%s", diff)
	}
	if got := summarize([]float64{3, 1, 2}); got.Median != 2 || got.P99 != 3 {
		t.Errorf("summarize(3,1,2) = %+v, want median 2 and p99 3", got)
	}
	if got := summarize(nil); got != (Summary{}) {
		t.Errorf("summarize(nil) = %+v, want zero", got)
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkTwinPatchDelivered/idle=0-2         	   21484	    174000 ns/op	      5753 patches/s
BenchmarkHubUpdateTwin-2                     	   81134	     41223 ns/op	     24259 updates/s
PASS
ok  	github.com/moduletwin/iothub-module-twin/bench	34.009s
`
	path := filepath.Join(t.TempDir(), "bench.txt")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := parseGoBench(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []GoBenchmark{
		{Name: "BenchmarkTwinPatchDelivered/idle=0-2", N: 21484, Metrics: map[string]float64{"ns/op": 174000, "patches/s": 5753}},
		{Name: "BenchmarkHubUpdateTwin-2", N: 81134, Metrics: map[string]float64{"ns/op": 41223, "updates/s": 24259}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseGoBench mismatch (-want +got):\n%s", diff)
	}
}
