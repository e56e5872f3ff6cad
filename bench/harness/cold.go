package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// ColdResult pairs one command of ours with its Node.js peer, both run as
// fresh processes, alternately, in the same run.
type ColdResult struct {
	Command string     `json:"command"`
	Case    string     `json:"case"`
	Go      ColdSeries `json:"go"`
	Node    ColdSeries `json:"node"`
	// Speedup is the Node.js median wall time over ours.
	Speedup float64 `json:"speedup"`
	// GoPrivateCAOnly is ours again, run third in each round, with the
	// system trust store reduced to the emulator's CA (SSL_CERT_FILE, and
	// SSL_CERT_DIR naming an empty directory): what the commands cost
	// without parsing the system's root certificates.
	GoPrivateCAOnly ColdSeries `json:"goPrivateCaOnly"`
}

// ColdSeries is one side's samples after the warm-up.
type ColdSeries struct {
	Argv      []string  `json:"argv"`
	WallMS    Summary   `json:"wallMs"`
	CPUMS     Summary   `json:"cpuMs"`
	MaxRSSMB  Summary   `json:"maxRssMb"`
	RawWallMS []float64 `json:"rawWallMs"`
	RawRSSMB  []float64 `json:"rawMaxRssMb"`
}

// coldCase builds the argument vectors of run i (warm-up runs included)
// for both sides.
type coldCase struct {
	command string
	name    string
	fresh   bool // every run must create new identities
	goArgv,
	nodeArgv func(i int) []string
}

func coldCases(cfg config) []coldCase {
	createGo := func(i int) []string {
		return []string{filepath.Join(cfg.binDir, "create-module"), "-d", fmt.Sprintf("cold-go-%d", i), "-m", "m", "-o", "json"}
	}
	createNode := func(i int) []string {
		return []string{cfg.node, "create-module.js", fmt.Sprintf("cold-node-%d", i), "m"}
	}
	return []coldCase{
		{command: "create-module", name: "first run (creates device and module)", fresh: true, goArgv: createGo, nodeArgv: createNode},
		// The same identities again: 409 on both creates, then a GET each.
		{command: "create-module", name: "second run (both exist)", goArgv: createGo, nodeArgv: createNode},
		{
			command: "update-module-twin",
			name:    "GET twin, PATCH desired with its etag",
			goArgv: func(i int) []string {
				return []string{filepath.Join(cfg.binDir, "update-module-twin"), "-d", "cold-go-0", "-m", "m",
					"--set", "counter=" + strconv.Itoa(i), "-o", "json"}
			},
			nodeArgv: func(i int) []string {
				return []string{cfg.node, "update-module-twin.js", "cold-node-0", "m", fmt.Sprintf(`{"counter":%d}`, i)}
			},
		},
	}
}

// runCold runs every case warmup+runs times, ours then the peer's (then
// ours with only the private CA), and keeps the samples after the warm-up.
func runCold(ctx context.Context, cfg config, r *runner, env []string, caFile, work string) ([]ColdResult, error) {
	noRoots := filepath.Join(work, "no-system-roots")
	if err := os.MkdirAll(noRoots, 0o755); err != nil {
		return nil, err
	}
	caOnlyEnv := withEnv(env, "SSL_CERT_FILE="+caFile, "SSL_CERT_DIR="+noRoots)
	var results []ColdResult
	for _, c := range coldCases(cfg) {
		var goRuns, nodeRuns, caOnlyRuns []Run
		for i := 0; i < cfg.warmup+cfg.runs; i++ {
			g, err := r.run(ctx, "", env, c.goArgv(i))
			if err != nil {
				return nil, err
			}
			n, err := r.run(ctx, cfg.nodeDir, env, c.nodeArgv(i))
			if err != nil {
				return nil, err
			}
			// The first-run case needs identities nobody created yet.
			argv := c.goArgv(i)
			if c.fresh {
				argv = c.goArgv(i + 1_000_000)
			}
			o, err := r.run(ctx, "", caOnlyEnv, argv)
			if err != nil {
				return nil, err
			}
			if i >= cfg.warmup {
				goRuns, nodeRuns, caOnlyRuns = append(goRuns, g), append(nodeRuns, n), append(caOnlyRuns, o)
			}
		}
		res := ColdResult{Command: c.command, Case: c.name, Go: series(c.goArgv(0), goRuns), Node: series(c.nodeArgv(0), nodeRuns),
			GoPrivateCAOnly: series(c.goArgv(0), caOnlyRuns)}
		res.Go.Argv[0] = filepath.Base(res.Go.Argv[0])
		res.GoPrivateCAOnly.Argv[0] = res.Go.Argv[0]
		res.Node.Argv[0] = "node"
		res.Speedup = round3(res.Node.WallMS.Median / res.Go.WallMS.Median)
		logf("cold: %s, %s: ours %.1f ms, Node.js %.1f ms, ours with only the private CA %.1f ms (medians of %d)",
			c.command, c.name, res.Go.WallMS.Median, res.Node.WallMS.Median, res.GoPrivateCAOnly.WallMS.Median, cfg.runs)
		results = append(results, res)
	}
	return results, nil
}

func series(argv []string, runs []Run) ColdSeries {
	var wall, cpu, rss []float64
	for _, r := range runs {
		wall = append(wall, round3(ms(r.Wall)))
		cpu = append(cpu, round3(ms(r.CPU)))
		rss = append(rss, mb(r.MaxRSS))
	}
	return ColdSeries{Argv: argv, WallMS: summarize(wall), CPUMS: summarize(cpu), MaxRSSMB: summarize(rss), RawWallMS: wall, RawRSSMB: rss}
}
