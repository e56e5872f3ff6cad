// Command harness runs the benchmarks behind BENCHMARKS.md against one
// fresh iothub-emulator with durable storage, listening where Microsoft's
// Node.js SDKs need it (HTTPS on 127.0.0.1:443, MQTT on 127.0.0.1:8883,
// HostName=localhost), so it must run as root or in a namespace where it
// is. Each of our commands is paired with a Node.js script doing the same
// calls, run alternately in the same run. It writes the raw figures as
// JSON and the report as Markdown. scripts/bench.sh drives it.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	binDir       string
	nodeDir      string
	node         string
	outJSON      string
	outDoc       string
	analysis     string
	goBenchFile  string
	tls          *tls.Config
	runs, warmup int

	receivers     int
	idle          time.Duration
	patches       int
	latencyWarmup int

	levels           []int
	methodLevels     []int
	createWorkers    int
	connectWorkers   int
	probes           int
	settle           time.Duration
	levelWorkers     int
	patchWorkers     []int
	throughputWarmup time.Duration
	throughputTime   time.Duration
	phases           map[string]bool
}

// Results is everything one run measured; bench/results.json holds it.
type Results struct {
	Setup        Setup           `json:"setup"`
	Clients      ClientResults   `json:"clients"`
	Capacity     CapacityResults `json:"capacity"`
	GoBenchmarks []GoBenchmark   `json:"goBenchmarks"`
	// LoadAverage is the one-minute load average when the run began
	// ("start"), when each phase began, and at the end: anything above
	// what the phase itself explains is other work on the machine.
	LoadAverage map[string]float64 `json:"loadAverage"`
	// ReferenceMS is how long a fixed CPU task took at the same moments:
	// the machine's speed, which varies on a shared host.
	ReferenceMS map[string]float64 `json:"referenceTaskMs"`
	Targets     []Target           `json:"targets"`
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func main() {
	cfg := config{}
	var levels, methodLevels, workers string
	flag.StringVar(&cfg.binDir, "bin", "bin", "directory with the built commands")
	flag.StringVar(&cfg.nodeDir, "node-dir", "bench/node", "directory of the Node.js peers, with node_modules installed")
	flag.StringVar(&cfg.outJSON, "json", "bench/results.json", "where to write the raw results")
	flag.StringVar(&cfg.outDoc, "doc", "BENCHMARKS.md", "where to write the report")
	flag.StringVar(&cfg.analysis, "analysis", "bench/analysis.md", "hand-written analysis appended to the report")
	flag.StringVar(&cfg.goBenchFile, "gobench", "", "output of `go test -bench` to include in the report")
	flag.IntVar(&cfg.runs, "runs", 15, "measured cold runs per command and side")
	flag.IntVar(&cfg.warmup, "warmup", 3, "cold runs per command and side before measuring")
	flag.IntVar(&cfg.receivers, "receivers", 3, "receivers of each kind kept connected for the idle memory figure")
	flag.DurationVar(&cfg.idle, "idle", 60*time.Second, "how long receivers sit connected before their memory is sampled")
	flag.IntVar(&cfg.patches, "patches", 1000, "measured patches per receiver")
	flag.IntVar(&cfg.latencyWarmup, "latency-warmup", 50, "patches per receiver before measuring")
	flag.StringVar(&levels, "levels", "1,100,1000,10000", "connected-module counts to measure at, ascending")
	flag.StringVar(&methodLevels, "method-levels", "1,1000", "connected-module counts (among -levels) at which direct method round trips are measured")
	flag.IntVar(&cfg.createWorkers, "create-workers", 32, "concurrent registry create requests")
	flag.IntVar(&cfg.connectWorkers, "connect-workers", 32, "concurrent MQTT connection attempts")
	flag.IntVar(&cfg.probes, "probes", 200, "measured one-at-a-time patches (and method calls) at each level")
	flag.DurationVar(&cfg.settle, "settle", 3*time.Second, "pause before sampling the emulator's memory")
	flag.IntVar(&cfg.levelWorkers, "level-workers", 64, "concurrent PATCH workers for the sustained rate at each level")
	flag.StringVar(&workers, "patch-workers", "16,256", "more worker counts for the sustained rate with every module connected, one run each")
	flag.DurationVar(&cfg.throughputWarmup, "throughput-warmup", 3*time.Second, "sustained PATCHes before measuring")
	flag.DurationVar(&cfg.throughputTime, "throughput-time", 10*time.Second, "how long the sustained rate is measured")
	phases := flag.String("phases", "clients,capacity", "phases to run: clients (cold runs, latency, footprint), capacity")
	reportOnly := flag.Bool("report-only", false, "measure nothing: rewrite -doc from the results in -json (after editing -analysis)")
	timeout := flag.Duration("timeout", 13*time.Minute, "give up after this long")
	flag.Parse()

	cfg.phases = map[string]bool{}
	for _, ph := range strings.Split(*phases, ",") {
		cfg.phases[strings.TrimSpace(ph)] = true
	}
	if *reportOnly {
		if err := rewriteReport(cfg); err != nil {
			fatalf("%v", err)
		}
		return
	}
	var err error
	if cfg.levels, err = intList(levels); err != nil || !slices.IsSorted(cfg.levels) {
		fatalf("-levels %q: want ascending counts", levels)
	}
	if cfg.methodLevels, err = intList(methodLevels); err != nil {
		fatalf("-method-levels %q: %v", methodLevels, err)
	}
	if cfg.patchWorkers, err = intList(workers); err != nil {
		fatalf("-patch-workers %q: %v", workers, err)
	}
	if cfg.node, err = exec.LookPath("node"); err != nil {
		fatalf("node is not installed: the peers need Node.js 18 or later")
	}
	if cfg.nodeDir, err = filepath.Abs(cfg.nodeDir); err != nil {
		fatalf("%v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.nodeDir, "node_modules", "azure-iothub")); err != nil {
		fatalf("the Node.js SDKs are not installed in %s: run npm ci there", cfg.nodeDir)
	}
	if cfg.binDir, err = filepath.Abs(cfg.binDir); err != nil {
		fatalf("%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		fatalf("%v", err)
	}
}

func run(ctx context.Context, cfg config) error {
	// Both this load generator and the emulator (which inherits the
	// limit) hold a descriptor per connection.
	need := uint64(cfg.levels[len(cfg.levels)-1]) + fileMargin
	limit, err := raiseFileLimit(1<<16, need)
	if err != nil {
		return fmt.Errorf("raise the open-files limit: %w", err)
	}
	logf("open-files limit: %d", limit)
	work, err := os.MkdirTemp("", "iothub-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dataDir := filepath.Join(work, "hub")

	res := Results{LoadAverage: map[string]float64{}, ReferenceMS: map[string]float64{}}
	mark := func(moment string) {
		res.LoadAverage[moment] = loadAverage()
		res.ReferenceMS[moment] = round3(ms(referenceTask()))
	}
	mark("start")
	if res.Setup, err = describeSetup(ctx, cfg, work); err != nil {
		return err
	}
	if cfg.goBenchFile != "" {
		if res.GoBenchmarks, err = parseGoBench(cfg.goBenchFile); err != nil {
			return err
		}
	}

	logf("starting iothub-emulator on %s (HTTPS) and %s (MQTT) with its data in %s", httpsAddr, mqttAddr, dataDir)
	em, err := startEmulator(ctx, cfg.binDir, dataDir, filepath.Join(work, "emulator.log"))
	if err != nil {
		return err
	}
	defer em.stop()
	if cfg.tls, err = trustCA(em.caFile); err != nil {
		return err
	}
	env := cliEnv(em)
	r, err := newRunner(work)
	if err != nil {
		return err
	}
	defer r.Close()

	if cfg.phases["clients"] {
		mark("clients")
		if res.Clients, err = runClients(ctx, cfg, em, env, r, work); err != nil {
			return err
		}
	}
	if cfg.phases["capacity"] {
		mark("capacity")
		if res.Capacity, err = runCapacity(ctx, cfg, em); err != nil {
			return err
		}
	}
	mark("end")
	res.Targets = evaluate(res)
	return writeOutputs(cfg, res)
}

// cliEnv is the environment of every client process: the emulator's
// settings for our commands and for Node.js, and nothing that would send
// them elsewhere or change whom they trust.
func cliEnv(em *emulatorProc) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "IOTHUB_") || strings.HasPrefix(k, "NODE_") || strings.HasPrefix(k, "SSL_CERT_") ||
			strings.HasSuffix(strings.ToUpper(k), "_PROXY") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"IOTHUB_CONNECTION_STRING="+em.connectionString,
		"IOTHUB_CA_FILE="+em.caFile,
		"NODE_EXTRA_CA_CERTS="+em.caFile,
	)
}

func withEnv(env []string, kv ...string) []string { return slices.Concat(env, kv) }

func trustCA(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: hostName, MinVersion: tls.VersionTLS12}, nil
}

// raiseFileLimit sets the soft open-files limit to want, raising the hard
// limit too when allowed (CAP_SYS_RESOURCE); without that it settles for
// the hard limit, which must still reach need.
func raiseFileLimit(want, need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return want, nil
		}
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < need {
		return lim.Cur, fmt.Errorf("the open-files limit is %d and cannot be raised; %d connections need %d", lim.Cur, need-fileMargin, need)
	}
	return lim.Cur, nil
}

// fileMargin is the descriptors a process needs besides its connections.
const fileMargin = 1024

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func writeOutputs(cfg config, res Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.outJSON, append(b, '\n'), 0o644); err != nil {
		return err
	}
	logf("wrote %s", cfg.outJSON)
	return writeReport(cfg, res)
}

// rewriteReport renders the report again from saved results.
func rewriteReport(cfg config) error {
	b, err := os.ReadFile(cfg.outJSON)
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", cfg.outJSON, err)
	}
	res.Targets = evaluate(res)
	return writeReport(cfg, res)
}

func writeReport(cfg config, res Results) error {
	analysis, err := os.ReadFile(cfg.analysis)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := renderReport(res, string(analysis))
	if err := os.WriteFile(cfg.outDoc, []byte(doc), 0o644); err != nil {
		return err
	}
	logf("wrote %s", cfg.outDoc)
	return nil
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}
