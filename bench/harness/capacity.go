package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moduletwin/iothub-module-twin/bench/loadgen"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// CreateResult is the registry's create rate over HTTPS keep-alive.
type CreateResult struct {
	Workers        int     `json:"workers"`
	Devices        int     `json:"devices"`
	Modules        int     `json:"modules"`
	DevicesPerSec  float64 `json:"devicesPerSec"`
	ModulesPerSec  float64 `json:"modulesPerSec"`
	ModuleCreateMS Summary `json:"moduleCreateMs"`
}

// ScalePoint is the emulator's cost with a number of modules connected.
type ScalePoint struct {
	Connected       int     `json:"connected"`
	EmulatorRSSMB   float64 `json:"emulatorRssMb"`
	RSSPerConnKB    float64 `json:"rssPerConnectionKb"` // over the RSS with none connected
	ConnectsPerSec  float64 `json:"connectsPerSec"`     // while reaching this level
	DeliveryMS      Summary `json:"deliveryMs"`         // PATCH sent → patch read by the module
	PatchResponseMS Summary `json:"patchResponseMs"`
	// MethodRoundTripMS is direct method calls one at a time, from just
	// before the service's POST to its answer read, through a module
	// that answers at once (nil at levels not probed).
	MethodRoundTripMS *Summary `json:"methodRoundTripMs,omitempty"`
	// Sustained is the sustained PATCH rate at this level, spread over
	// the connected modules (nil below the worker count).
	Sustained *Throughput `json:"sustained,omitempty"`
}

// Throughput is sustained durable twin PATCHes, each delivered to a
// connected module.
type Throughput struct {
	Workers          int     `json:"workers"`
	Connected        int     `json:"connected"`
	Seconds          float64 `json:"seconds"`
	Patches          int64   `json:"patches"`
	PatchesPerSec    float64 `json:"patchesPerSec"`
	DeliveredPerSec  float64 `json:"deliveredPerSec"`
	Undelivered      int64   `json:"undelivered"` // sent in the whole run and never delivered
	PatchResponseMS  Summary `json:"patchResponseMs"`
	DeliveryMS       Summary `json:"deliveryMs"`
	EmulatorCPUCores float64 `json:"emulatorCpuCores"` // average cores busy in the emulator
	LoadgenCPUCores  float64 `json:"loadgenCpuCores"`  // … and in this load generator
	OtherCPUCores    float64 `json:"otherCpuCores"`    // … and in every other process of the machine
}

// CapacityResults are the emulator's figures.
type CapacityResults struct {
	FsyncPolicy   string       `json:"fsyncPolicy"`
	Creates       CreateResult `json:"creates"`
	BaselineRSSMB float64      `json:"baselineRssMb"`
	Scaling       []ScalePoint `json:"scaling"`
	// Workers is how many workers send the sustained PATCHes at each
	// level; Throughput has more worker counts with every module connected.
	Workers    int          `json:"workers"`
	Throughput []Throughput `json:"throughput"`
}

const fsyncPolicy = "durable: every acknowledged write is committed to the bbolt file with fdatasync before the hub answers " +
	"or delivers it; writes waiting at the same time share one commit (group commit, up to 4096 changes per transaction)"

// fleet is the load generator's modules and their MQTT connections.
type fleet struct {
	cfg     loadgen.ModuleConfig
	modules []loadgen.Module
	conns   []*loadgen.ModuleConn

	delivered atomic.Int64
	// sentAt holds, per module, when its outstanding patch was sent
	// (unix nanoseconds; 0 when none): a worker never has two patches
	// outstanding for one module.
	sentAt    []atomic.Int64
	recording atomic.Bool
	latMu     sync.Mutex
	latencies []time.Duration
	probe     chan time.Time
	probeIdx  atomic.Int64
}

func (f *fleet) onPatch(i int) func(loadgen.Patch) {
	return func(p loadgen.Patch) {
		f.delivered.Add(1)
		if f.probeIdx.Load() == int64(i) {
			select {
			case f.probe <- p.At:
			default:
			}
		}
		if s := f.sentAt[i].Swap(0); s != 0 && f.recording.Load() {
			f.latMu.Lock()
			f.latencies = append(f.latencies, p.At.Sub(time.Unix(0, s)))
			f.latMu.Unlock()
		}
	}
}

// runCapacity creates the identities, connects them in steps, measures
// each step, and ends with the sustained PATCH rate.
func runCapacity(ctx context.Context, cfg config, em *emulatorProc) (CapacityResults, error) {
	res := CapacityResults{FsyncPolicy: fsyncPolicy}
	maxLevel := cfg.levels[len(cfg.levels)-1]
	workers := cfg.createWorkers
	svc, err := loadgen.NewService(em.connectionString, cfg.tls, max(workers, maxWorkers(cfg)))
	if err != nil {
		return res, err
	}
	defer svc.Close()

	modules, creates, err := createIdentities(ctx, svc, maxLevel, workers)
	if err != nil {
		return res, err
	}
	res.Creates = creates
	logf("capacity: created %d devices at %.0f/s and %d modules at %.0f/s", creates.Devices, creates.DevicesPerSec, creates.Modules, creates.ModulesPerSec)

	f := &fleet{
		cfg: loadgen.ModuleConfig{Addr: mqttAddr, HostName: hostName, TLS: cfg.tls, KeepAlive: 15 * time.Minute,
			AnswerMethods: true},
		modules: modules,
		sentAt:  make([]atomic.Int64, len(modules)),
		probe:   make(chan time.Time, 1),
	}
	f.probeIdx.Store(-1)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range f.conns {
			wg.Go(func() { c.Close() })
		}
		wg.Wait()
	}()

	settle := func() { time.Sleep(cfg.settle) }
	settle()
	base, err := readMemory(em.pid())
	if err != nil {
		return res, err
	}
	res.BaselineRSSMB = mb(base.RSS)

	for _, level := range cfg.levels {
		start := time.Now()
		before := len(f.conns)
		if err := f.connect(ctx, level, cfg.connectWorkers); err != nil {
			return res, err
		}
		pt := ScalePoint{Connected: level, ConnectsPerSec: round3(float64(level-before) / time.Since(start).Seconds())}
		settle()
		m, err := readMemory(em.pid())
		if err != nil {
			return res, err
		}
		pt.EmulatorRSSMB = mb(m.RSS)
		pt.RSSPerConnKB = round3(float64(m.RSS-base.RSS) / float64(level) / 1024)
		if pt.DeliveryMS, pt.PatchResponseMS, err = f.probeLatency(ctx, svc, cfg.probes); err != nil {
			return res, err
		}
		logf("capacity: %d connected: emulator RSS %.1f MB (%.1f KB each), delivery p50 %.2f ms p99 %.2f ms",
			level, pt.EmulatorRSSMB, pt.RSSPerConnKB, pt.DeliveryMS.Median, pt.DeliveryMS.P99)
		if slices.Contains(cfg.methodLevels, level) {
			rt, err := f.probeMethods(ctx, svc, cfg.probes)
			if err != nil {
				return res, err
			}
			pt.MethodRoundTripMS = &rt
			logf("capacity: %d connected: direct method round trip p50 %.2f ms p99 %.2f ms", level, rt.Median, rt.P99)
		}
		if level >= cfg.levelWorkers {
			tp, err := f.sustain(ctx, svc, em, cfg.levelWorkers, cfg.throughputWarmup, cfg.throughputTime)
			if err != nil {
				return res, err
			}
			logSustained(tp)
			pt.Sustained = &tp
		}
		res.Scaling = append(res.Scaling, pt)
	}
	res.Workers = cfg.levelWorkers

	for _, w := range cfg.patchWorkers {
		if w > len(f.conns) {
			continue
		}
		tp, err := f.sustain(ctx, svc, em, w, cfg.throughputWarmup, cfg.throughputTime)
		if err != nil {
			return res, err
		}
		logSustained(tp)
		res.Throughput = append(res.Throughput, tp)
	}
	return res, nil
}

func logSustained(tp Throughput) {
	logf("capacity: %d connected, %d workers: %.0f durable PATCH/s, %.0f delivered/s, %d lost; CPU: emulator %.2f cores, load generator %.2f, others %.2f",
		tp.Connected, tp.Workers, tp.PatchesPerSec, tp.DeliveredPerSec, tp.Undelivered, tp.EmulatorCPUCores, tp.LoadgenCPUCores, tp.OtherCPUCores)
}

func maxWorkers(cfg config) int {
	n := cfg.levelWorkers
	for _, w := range cfg.patchWorkers {
		n = max(n, w)
	}
	return n
}

// createIdentities creates n modules, iothub.MaxModulesPerDevice to a
// device, with workers concurrent requests; a warm-up round first opens
// the keep-alive connections.
func createIdentities(ctx context.Context, svc *loadgen.Service, n, workers int) ([]loadgen.Module, CreateResult, error) {
	res := CreateResult{Workers: workers}
	perDevice := iothub.MaxModulesPerDevice
	devices := (n + perDevice - 1) / perDevice
	if _, err := parallel(ctx, workers, workers, func(ctx context.Context, i int) error {
		_, err := svc.CreateModule(ctx, "warm-"+strconv.Itoa(i), "m")
		if err != nil {
			if err = svc.CreateDevice(ctx, "warm-"+strconv.Itoa(i)); err == nil {
				_, err = svc.CreateModule(ctx, "warm-"+strconv.Itoa(i), "m")
			}
		}
		return err
	}); err != nil {
		return nil, res, fmt.Errorf("warm-up creates: %w", err)
	}

	deviceID := func(i int) string { return fmt.Sprintf("load-%05d", i) }
	start := time.Now()
	if _, err := parallel(ctx, devices, workers, func(ctx context.Context, i int) error {
		return svc.CreateDevice(ctx, deviceID(i))
	}); err != nil {
		return nil, res, err
	}
	res.Devices = devices
	res.DevicesPerSec = round3(float64(devices) / time.Since(start).Seconds())

	modules := make([]loadgen.Module, n)
	start = time.Now()
	took, err := parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		m, err := svc.CreateModule(ctx, deviceID(i/perDevice), fmt.Sprintf("m%02d", i%perDevice))
		modules[i] = m
		return err
	})
	if err != nil {
		return nil, res, err
	}
	res.Modules = n
	res.ModulesPerSec = round3(float64(n) / time.Since(start).Seconds())
	res.ModuleCreateMS = summarize(durationsMS(took))
	// Spread consecutive indexes over devices, so that any prefix of the
	// fleet is spread too.
	spread := make([]loadgen.Module, 0, n)
	for j := 0; j < perDevice; j++ {
		for d := 0; d < devices; d++ {
			if i := d*perDevice + j; i < n {
				spread = append(spread, modules[i])
			}
		}
	}
	return spread, res, nil
}

// parallel runs fn for 0..n-1 on workers goroutines and returns how long
// each call took; the first error stops the rest.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) ([]time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	took := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				start := time.Now()
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
				took[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return took, ctx.Err()
}

// connect opens connections until level modules are connected.
func (f *fleet) connect(ctx context.Context, level, workers int) error {
	from := len(f.conns)
	if level <= from {
		return nil
	}
	conns := make([]*loadgen.ModuleConn, level-from)
	_, err := parallel(ctx, level-from, workers, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := loadgen.DialModule(dctx, f.cfg, f.modules[from+i], f.onPatch(from+i))
		if err != nil {
			return fmt.Errorf("connect module %d: %w", from+i, err)
		}
		conns[i] = c
		return nil
	})
	for _, c := range conns {
		if c != nil {
			f.conns = append(f.conns, c)
		}
	}
	return err
}

// probeLatency sends n patches one at a time (after a short warm-up) to
// connected modules spread over the fleet, and times each from just
// before the PATCH request to the delivery read by the module.
func (f *fleet) probeLatency(ctx context.Context, svc *loadgen.Service, n int) (delivery, response Summary, err error) {
	const warmup = 20
	connected := len(f.conns)
	var lat, resp []time.Duration
	for k := -warmup; k < n; k++ {
		i := (k + warmup) * 7919 % connected // a prime stride visits modules all over the fleet
		f.probeIdx.Store(int64(i))
		body := loadgen.DesiredPatchBody(map[string]any{"probe": k})
		sent := time.Now()
		if _, err := svc.PatchTwin(ctx, f.modules[i], body); err != nil {
			return delivery, response, err
		}
		answered := time.Now()
		select {
		case at := <-f.probe:
			if k >= 0 {
				lat = append(lat, at.Sub(sent))
				resp = append(resp, answered.Sub(sent))
			}
		case <-time.After(10 * time.Second):
			return delivery, response, fmt.Errorf("module %d: patch not delivered within 10 s", i)
		}
		f.probeIdx.Store(-1)
	}
	return summarize(durationsMS(lat)), summarize(durationsMS(resp)), nil
}

// probeMethods calls a direct method on connected modules spread over the
// fleet, one call at a time (after a short warm-up), and times each from
// just before the POST to the answer; every module answers at once with
// the payload it got.
func (f *fleet) probeMethods(ctx context.Context, svc *loadgen.Service, n int) (Summary, error) {
	const warmup = 20
	connected := len(f.conns)
	var took []time.Duration
	for k := -warmup; k < n; k++ {
		i := (k + warmup) * 7919 % connected
		start := time.Now()
		res, err := svc.InvokeMethod(ctx, f.modules[i], "probe", map[string]int{"probe": k})
		if err != nil {
			return Summary{}, fmt.Errorf("module %d: %w", i, err)
		}
		elapsed := time.Since(start)
		if want := fmt.Sprintf(`{"probe":%d}`, k); res.Status != 200 || string(res.Payload) != want {
			return Summary{}, fmt.Errorf("module %d answered %d %s, want 200 %s", i, res.Status, res.Payload, want)
		}
		if k >= 0 {
			took = append(took, elapsed)
		}
	}
	return summarize(durationsMS(took)), nil
}

// sustain runs workers that PATCH connected modules' twins as fast as the
// hub answers, each on its own keep-alive connection, and measures the
// steady state after a warm-up.
func (f *fleet) sustain(ctx context.Context, svc *loadgen.Service, em *emulatorProc, workers int, warmup, measure time.Duration) (Throughput, error) {
	tp := Throughput{Workers: workers, Connected: len(f.conns)}
	connected := len(f.conns)
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		sent      atomic.Int64
		patches   atomic.Int64
		failures  atomic.Int64
		firstErr  atomic.Value
		respMu    sync.Mutex
		responses []time.Duration
	)
	startDelivered := f.delivered.Load()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var local []time.Duration
			seq := 0
			for i := w; !stop.Load(); i += workers {
				if i >= connected {
					i = w
				}
				seq++
				body := fmt.Appendf(nil, `{"properties":{"desired":{"load":%d}}}`, seq)
				t := time.Now()
				f.sentAt[i].Store(t.UnixNano())
				sent.Add(1)
				if _, err := svc.PatchTwin(ctx, f.modules[i], body); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
					stop.Store(true)
					return
				}
				if measuring.Load() {
					patches.Add(1)
					local = append(local, time.Since(t))
				}
			}
			respMu.Lock()
			responses = append(responses, local...)
			respMu.Unlock()
		})
	}

	time.Sleep(warmup)
	f.latMu.Lock()
	f.latencies = f.latencies[:0]
	f.latMu.Unlock()
	emCPU0, err := cpuTime(em.pid())
	if err != nil {
		stop.Store(true)
		wg.Wait()
		return tp, err
	}
	self0 := selfCPU()
	busy0, total0, err := systemCPU()
	if err != nil {
		stop.Store(true)
		wg.Wait()
		return tp, err
	}
	delivered0 := f.delivered.Load()
	start := time.Now()
	measuring.Store(true)
	f.recording.Store(true)
	time.Sleep(measure)
	measuring.Store(false)
	f.recording.Store(false)
	elapsed := time.Since(start)
	delivered1 := f.delivered.Load()
	self1 := selfCPU()
	emCPU1, _ := cpuTime(em.pid())
	busy1, total1, _ := systemCPU()
	stop.Store(true)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return tp, fmt.Errorf("%d workers: %w", workers, err)
	}

	// Every patch sent must reach its module.
	deadline := time.Now().Add(10 * time.Second)
	for f.delivered.Load()-startDelivered < sent.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tp.Undelivered = sent.Load() - (f.delivered.Load() - startDelivered)

	tp.Seconds = round3(elapsed.Seconds())
	tp.Patches = patches.Load()
	tp.PatchesPerSec = round3(float64(tp.Patches) / elapsed.Seconds())
	tp.DeliveredPerSec = round3(float64(delivered1-delivered0) / elapsed.Seconds())
	tp.PatchResponseMS = summarize(durationsMS(responses))
	f.latMu.Lock()
	tp.DeliveryMS = summarize(durationsMS(f.latencies))
	f.latMu.Unlock()
	tp.EmulatorCPUCores = round3((emCPU1 - emCPU0).Seconds() / elapsed.Seconds())
	tp.LoadgenCPUCores = round3((self1 - self0).Seconds() / elapsed.Seconds())
	if total1 > total0 {
		busyCores := float64(busy1-busy0) / float64(total1-total0) * float64(runtime.NumCPU())
		tp.OtherCPUCores = round3(max(0, busyCores-tp.EmulatorCPUCores-tp.LoadgenCPUCores))
	}
	return tp, nil
}
