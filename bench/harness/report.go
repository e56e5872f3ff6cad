package main

import (
	"fmt"
	"slices"
	"strings"
)

// Target is one goal of the benchmarks and whether this run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// evaluate checks the run against the goals set for it.
func evaluate(res Results) []Target {
	var ts []Target
	add := func(name, want, got string, met bool) {
		ts = append(ts, Target{Name: name, Want: want, Got: got, Met: met})
	}
	for _, c := range res.Clients.Cold {
		add(c.Command+", "+c.Case+": median start to exit", "≤ 15 ms",
			fmt.Sprintf("%s (%s when only the private CA is loaded)", fmtMS(c.Go.WallMS.Median), fmtMS(c.GoPrivateCAOnly.WallMS.Median)),
			c.Go.WallMS.Median <= 15)
		add(c.Command+", "+c.Case+": faster than the Node.js peer", "≥ 10×", fmt.Sprintf("%.1f× (%s vs %s)", c.Speedup, fmtMS(c.Go.WallMS.Median), fmtMS(c.Node.WallMS.Median)), c.Speedup >= 10)
	}
	if lat := res.Clients.Latency; len(lat) == 2 {
		g, n := lat[0].LatencyMS, lat[1].LatencyMS
		add("patch latency p50", "≤ 2 ms", fmtMS(g.Median), g.Median <= 2)
		add("patch latency p99", "≤ 10 ms", fmtMS(g.P99), g.P99 <= 10)
		add("patch latency p50 better than Node.js", "< "+fmtMS(n.Median), fmtMS(g.Median), g.Median < n.Median)
		add("patch latency p99 better than Node.js", "< "+fmtMS(n.P99), fmtMS(g.P99), g.P99 < n.P99)
	}
	fp := res.Clients.Footprint
	add("receiver idle RSS", "≤ 15 MB", fmtMB(fp.GoIdleRSSMB.Median), fp.GoIdleRSSMB.Median <= 15)
	add("receiver idle RSS vs Node.js", "≤ ¼ ("+fmtMB(fp.NodeIdleRSSMB.Median/4)+")", fmtMB(fp.GoIdleRSSMB.Median),
		fp.GoIdleRSSMB.Median <= fp.NodeIdleRSSMB.Median/4)
	// The target is judged at each level's run; the other worker counts
	// show how the rate depends on concurrency.
	for _, pt := range res.Capacity.Scaling {
		if tp := pt.Sustained; tp != nil {
			add(fmt.Sprintf("durable twin PATCH/s, each delivered, %d modules connected (%d workers)", tp.Connected, tp.Workers), "≥ 5,000/s, none lost",
				fmt.Sprintf("%.0f/s, %d lost", tp.PatchesPerSec, tp.Undelivered), tp.PatchesPerSec >= 5000 && tp.Undelivered == 0)
		}
	}
	if sc := res.Capacity.Scaling; len(sc) > 0 {
		last := sc[len(sc)-1]
		add(fmt.Sprintf("%d connections held", last.Connected), "≥ 10,000 in ≤ 1 GB",
			fmt.Sprintf("%d in %s", last.Connected, fmtMB(last.EmulatorRSSMB)), last.Connected >= 10000 && last.EmulatorRSSMB <= 1024)
	}
	return ts
}

// sustainedRuns lists every sustained PATCH run: one per level, then the
// other worker counts at the last level.
func sustainedRuns(cp CapacityResults) []Throughput {
	var out []Throughput
	for _, pt := range cp.Scaling {
		if pt.Sustained != nil {
			out = append(out, *pt.Sustained)
		}
	}
	return append(out, cp.Throughput...)
}

func fmtMS(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func fmtMB(v float64) string { return fmt.Sprintf("%.1f MB", v) }

func mark(met bool) string {
	if met {
		return "met"
	}
	return "**missed**"
}

// renderReport writes BENCHMARKS.md.
func renderReport(res Results, analysis string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	s := res.Setup
	cl := res.Clients
	cp := res.Capacity

	p("# Benchmarks\n\n")
	p("Our three commands and `iothub-emulator`, measured side by side with equivalent scripts on Microsoft's\n")
	p("Node.js IoT Hub SDKs, in one run against one fresh emulator. This file is written by `make bench`\n")
	p("(run on %s); the raw numbers are in [bench/results.json](bench/results.json), and the closing analysis\n", s.Date)
	p("comes from [bench/analysis.md](bench/analysis.md).\n\n")

	p("## Summary\n\n")
	p("| Figure | Ours | Node.js SDK peer | Target | |\n|---|---|---|---|---|\n")
	for _, c := range cl.Cold {
		p("| `%s`, %s: median start to exit | %s (%s with only the private CA loaded) | %s (%.1f× slower) | ≤ 15 ms, ≥ 10× faster | %s |\n",
			c.Command, c.Case, fmtMS(c.Go.WallMS.Median), fmtMS(c.GoPrivateCAOnly.WallMS.Median),
			fmtMS(c.Node.WallMS.Median), c.Speedup, mark(c.Go.WallMS.Median <= 15 && c.Speedup >= 10))
	}
	for _, c := range cl.Cold {
		p("| `%s`, %s: peak RSS (median) | %s (%s with only the private CA loaded) | %s | — | |\n",
			c.Command, c.Case, fmtMB(c.Go.MaxRSSMB.Median), fmtMB(c.GoPrivateCAOnly.MaxRSSMB.Median), fmtMB(c.Node.MaxRSSMB.Median))
	}
	if len(cl.Latency) == 2 {
		g, n := cl.Latency[0].LatencyMS, cl.Latency[1].LatencyMS
		p("| Patch latency p50, PATCH sent → line printed (%d patches) | %s | %s | ≤ 2 ms, better than peer | %s |\n",
			cl.Latency[0].Patches, fmtMS(g.Median), fmtMS(n.Median), mark(g.Median <= 2 && g.Median < n.Median))
		p("| Patch latency p99 | %s | %s | ≤ 10 ms, better than peer | %s |\n",
			fmtMS(g.P99), fmtMS(n.P99), mark(g.P99 <= 10 && g.P99 < n.P99))
	}
	fp := cl.Footprint
	p("| Receiver idle RSS after %.0f s connected (median of %d) | %s | %s (%.1f× ours) | ≤ 15 MB, ≤ ¼ of peer | %s |\n",
		fp.IdleSeconds, fp.Receivers, fmtMB(fp.GoIdleRSSMB.Median), fmtMB(fp.NodeIdleRSSMB.Median), fp.NodeIdleRSSMB.Median/fp.GoIdleRSSMB.Median,
		mark(fp.GoIdleRSSMB.Median <= 15 && fp.GoIdleRSSMB.Median <= fp.NodeIdleRSSMB.Median/4))
	p("| Receiver peak RSS over the whole run (wait4) | %s | %s | — | |\n", fmtMB(fp.GoPeakRSSMB.Median), fmtMB(fp.NodePeakRSSMB.Median))
	for _, pt := range cp.Scaling {
		if tp := pt.Sustained; tp != nil {
			p("| Emulator: durable twin PATCH/s over HTTPS keep-alive, each delivered over MQTT, spread over %d connected modules | %.0f/s (%d workers, %d lost) | no Node.js hub | ≥ 5,000/s | %s |\n",
				tp.Connected, tp.PatchesPerSec, tp.Workers, tp.Undelivered, mark(tp.PatchesPerSec >= 5000 && tp.Undelivered == 0))
		}
	}
	if len(cp.Scaling) > 0 {
		last := cp.Scaling[len(cp.Scaling)-1]
		p("| Emulator: %d idle MQTT module connections, process RSS | %s (%.1f KB each) | no Node.js hub | ≥ 10,000 in ≤ 1 GB | %s |\n",
			last.Connected, fmtMB(last.EmulatorRSSMB), last.RSSPerConnKB, mark(last.Connected >= 10000 && last.EmulatorRSSMB <= 1024))
	}
	p("| Emulator: registry creates/s, durable (%d concurrent) | %.0f modules/s, %.0f devices/s | no Node.js hub | — | |\n\n",
		cp.Creates.Workers, cp.Creates.ModulesPerSec, cp.Creates.DevicesPerSec)

	var missed []Target
	for _, t := range res.Targets {
		if !t.Met {
			missed = append(missed, t)
		}
	}
	p("## Targets missed in this run\n\n")
	if len(missed) == 0 {
		p("None: every target was met.\n\n")
	} else {
		for _, t := range missed {
			p("- %s: wanted %s, got %s.\n", t.Name, t.Want, t.Got)
		}
		p("\nWhy, with profiles, is in the analysis below.\n\n")
	}

	p("## Setup\n\n")
	p("- Machine: %s, %d cores, %.0f GB RAM, Linux %s; the data directory's disk does a 4 KiB write + fdatasync in %s (p50; p99 %s).\n",
		s.CPU, s.Cores, s.MemoryGB, s.Kernel, fmtMS(s.FsyncMS.Median), fmtMS(s.FsyncMS.P99))
	p("- One-minute load average at the start %.2f, when the client phase began %.2f, when the capacity phase began %.2f,\n",
		res.LoadAverage["start"], res.LoadAverage["clients"], res.LoadAverage["capacity"])
	p("  at the end %.2f (the Go benchmarks run just before the start; other work on the machine would show here too).\n", res.LoadAverage["end"])
	p("  A fixed single-threaded task (SHA-256 over 256 MiB) took %.0f, %.0f, %.0f and %.0f ms at those moments: the machine's\n",
		res.ReferenceMS["start"], res.ReferenceMS["clients"], res.ReferenceMS["capacity"], res.ReferenceMS["end"])
	p("  speed, against which runs on this shared virtual machine can be compared.\n")
	p("- Ours: %s, commands built by `make build` (`-trimpath`). Peers: Node.js %s with", s.Go, s.Node)
	p(" azure-iothub %s, azure-iot-device %s, azure-iot-device-mqtt %s (pinned in `bench/node/package-lock.json`).\n",
		s.NodeSDKs["azure-iothub"], s.NodeSDKs["azure-iot-device"], s.NodeSDKs["azure-iot-device-mqtt"])
	p("- Hub: one `iothub-emulator` process for the whole run, HTTPS on 127.0.0.1:443 and MQTT over TLS on 127.0.0.1:8883,\n")
	p("  `HostName=localhost` (the Node.js SDKs reach no other ports; our commands use the same host, so both sides make the\n")
	p("  same TLS connections), data in a fresh `--data-dir`, log level warn. Storage is %s.\n", cp.FsyncPolicy)
	p("- Cold runs: each command is a new process, timed from just before fork/exec to its exit (wait4), with the peak\n")
	p("  resident set from wait4's `ru_maxrss`. Ours and the peer alternate (A B A B): %d warm-up pairs, then %d measured\n", s.Warmup, s.Runs)
	p("  pairs per command; figures are medians. The first-run case creates new identities each time; the second-run case\n")
	p("  repeats those creates (409, then a GET each); the update reads the twin and PATCHes it with the etag just read.\n")
	p("  Peers: `bench/node/create-module.js`, `update-module-twin.js` (the same REST calls through `azure-iothub`'s Registry).\n")
	p("  Each round also runs ours a third time with the system trust store reduced to the emulator's CA (`SSL_CERT_FILE`\n")
	p("  set to it, `SSL_CERT_DIR` to an empty directory): the cost of the commands without parsing the system's roots.\n")
	p("- Patch latency: `receive-twin-patch --output json` and `bench/node/receive-twin-patch.js` (a `ModuleClient` over\n")
	p("  `azure-iot-device-mqtt`, printing the same JSON lines) run connected to one module each; the harness sends a\n")
	p("  desired patch over a keep-alive HTTPS connection to ours, waits for the line, then to the peer, and so on:\n")
	p("  %d warm-up patches each, then %d. Latency runs from just before the PATCH request to the moment the receiver's\n", s.LatencyWarmup, s.Patches)
	p("  line is read from its stdout pipe.\n")
	p("- Footprint: %d receivers of each kind connect first and sit idle through the cold runs; VmRSS is sampled from\n", fp.Receivers)
	p("  /proc once each has been connected for %.0f s. Peak RSS is wait4's `ru_maxrss` at exit (after the latency run).\n", s.IdleSeconds)
	p("- Capacity: a load generator written in Go (`bench/loadgen`: HTTPS keep-alive service client, and a minimal MQTT\n")
	p("  3.1.1 module client that subscribes to desired patches with QoS 1) runs in the harness process, on the same %d\n", s.Cores)
	p("  cores as the emulator. It creates %d modules (%d devices of 50), connects them in steps of %v, and at each step\n",
		cp.Creates.Modules, cp.Creates.Devices, s.Levels)
	p("  reads the emulator's VmRSS (after %.0f s) and times %d one-at-a-time patches from the PATCH request to the PUBLISH\n", s.SettleSeconds, s.Probes)
	p("  read by the module. At each step with at least %d modules, %d workers then PATCH the connected modules' twins\n", s.LevelWorkers, s.LevelWorkers)
	p("  (each worker its own modules, round robin, one request at a time on its own keep-alive connection) for %.0f s\n", s.SustainSeconds)
	p("  after a %.0f s warm-up; every patch sent must reach its module. With all connected, the same again with %v workers.\n\n",
		s.SustainWarmupSecs, s.PatchWorkers)

	p("## Cold runs\n\n")
	p("| Command | Side | Median | p90 | Min | Max | CPU (median) | Peak RSS (median) |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range cl.Cold {
		for _, sd := range []struct {
			name string
			s    ColdSeries
		}{{"ours", c.Go}, {"Node.js", c.Node}, {"ours, private CA only", c.GoPrivateCAOnly}} {
			p("| %s, %s | %s: `%s` | %s | %s | %s | %s | %s | %s |\n", c.Command, c.Case, sd.name, strings.Join(sd.s.Argv, " "),
				fmtMS(sd.s.WallMS.Median), fmtMS(sd.s.WallMS.P90), fmtMS(sd.s.WallMS.Min), fmtMS(sd.s.WallMS.Max),
				fmtMS(sd.s.CPUMS.Median), fmtMB(sd.s.MaxRSSMB.Median))
		}
	}
	p("\n## Patch latency\n\n")
	p("| Receiver | p50 | p90 | p99 | Max | Mean | PATCH answered (p50 / p99) |\n|---|---|---|---|---|---|---|\n")
	for _, l := range cl.Latency {
		p("| `%s` | %s | %s | %s | %s | %s | %s / %s |\n", strings.Join(l.Argv, " "),
			fmtMS(l.LatencyMS.Median), fmtMS(l.LatencyMS.P90), fmtMS(l.LatencyMS.P99), fmtMS(l.LatencyMS.Max), fmtMS(l.LatencyMS.Mean),
			fmtMS(l.PatchResponseMS.Median), fmtMS(l.PatchResponseMS.P99))
	}
	p("\n## Footprint\n\n")
	p("| Receiver | Idle RSS after %.0f s (median, min–max) | Peak RSS (median) |\n|---|---|---|\n", fp.IdleSeconds)
	p("| `receive-twin-patch` | %s (%s–%s) | %s |\n", fmtMB(fp.GoIdleRSSMB.Median), fmtMB(fp.GoIdleRSSMB.Min), fmtMB(fp.GoIdleRSSMB.Max), fmtMB(fp.GoPeakRSSMB.Median))
	p("| Node.js `ModuleClient` | %s (%s–%s) | %s |\n\n", fmtMB(fp.NodeIdleRSSMB.Median), fmtMB(fp.NodeIdleRSSMB.Min), fmtMB(fp.NodeIdleRSSMB.Max), fmtMB(fp.NodePeakRSSMB.Median))

	p("## Emulator capacity\n\n")
	p("Registry creates over HTTPS keep-alive, %d concurrent requests, every create durable before its answer:\n", cp.Creates.Workers)
	p("%d devices at %.0f/s, then %d modules at %.0f/s (a module create takes %s p50, %s p99).\n\n",
		cp.Creates.Devices, cp.Creates.DevicesPerSec, cp.Creates.Modules, cp.Creates.ModulesPerSec,
		fmtMS(cp.Creates.ModuleCreateMS.Median), fmtMS(cp.Creates.ModuleCreateMS.P99))
	p("Sustained durable twin PATCHes, spread over the connected modules, each patch delivered to its module:\n\n")
	p("| Connected | Workers | PATCH/s | Delivered/s | Lost | PATCH answered p50 / p99 | Delivered p50 / p99 | CPU: emulator | load generator | other processes |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range sustainedRuns(cp) {
		p("| %d | %d | %.0f | %.0f | %d | %s / %s | %s / %s | %.2f cores | %.2f | %.2f |\n", t.Connected, t.Workers, t.PatchesPerSec, t.DeliveredPerSec, t.Undelivered,
			fmtMS(t.PatchResponseMS.Median), fmtMS(t.PatchResponseMS.P99), fmtMS(t.DeliveryMS.Median), fmtMS(t.DeliveryMS.P99),
			t.EmulatorCPUCores, t.LoadgenCPUCores, t.OtherCPUCores)
	}
	p("\nHow cost grows with connected modules (emulator RSS with none connected: %s):\n\n", fmtMB(cp.BaselineRSSMB))
	p("| Connected modules | Emulator RSS | Per connection | Connects/s | Delivery p50 | Delivery p99 | PATCH answered p50 | Method round trip p50 / p99 |\n|---|---|---|---|---|---|---|---|\n")
	for _, pt := range cp.Scaling {
		perConn := "—" // one connection is lost in the noise of the heap
		if pt.Connected >= 100 {
			perConn = fmt.Sprintf("%.1f KB", pt.RSSPerConnKB)
		}
		method := "—"
		if m := pt.MethodRoundTripMS; m != nil {
			method = fmtMS(m.Median) + " / " + fmtMS(m.P99)
		}
		p("| %d | %s | %s | %.0f | %s | %s | %s | %s |\n", pt.Connected, fmtMB(pt.EmulatorRSSMB), perConn, pt.ConnectsPerSec,
			fmtMS(pt.DeliveryMS.Median), fmtMS(pt.DeliveryMS.P99), fmtMS(pt.PatchResponseMS.Median), method)
	}
	p("\nDelivery is a desired PATCH sent to the patch read by its module; the method round trip is a direct method call, ")
	p("one at a time, from the service's POST to its answer read, through the emulator and a module that answers at once; ")
	p("both over the same connections in the same run. Modules subscribe to desired patches and direct methods.\n")
	if len(res.GoBenchmarks) > 0 {
		p("\n## Go benchmarks\n\n")
		p("`go test -run '^$' -bench . ./bench` against an in-process emulator with durable storage (client and hub in one process):\n\n")
		p("| Benchmark | Iterations | Time per op | Other metrics |\n|---|---|---|---|\n")
		for _, gb := range res.GoBenchmarks {
			var other []string
			for _, unit := range sortedUnits(gb.Metrics) {
				if unit != "ns/op" {
					other = append(other, fmt.Sprintf("%.4g %s", gb.Metrics[unit], unit))
				}
			}
			p("| %s | %d | %s | %s |\n", gb.Name, gb.N, fmtMS(gb.Metrics["ns/op"]/1e6), strings.Join(other, ", "))
		}
	}
	p("\n## Reproducing\n\n")
	p("`make bench` (as root: the Node.js SDKs need ports 443 and 8883; otherwise it runs in a private network namespace).\n")
	p("It builds the commands, installs the pinned Node.js SDKs in `bench/node`, runs the Go benchmarks, then\n")
	p("`go run ./bench/harness`. It never runs in `make test`. A profile of the hub under the sustained PATCH load:\n")
	p("`go test -run '^$' -bench TwinPatchDelivered -cpuprofile cpu.out ./bench && go tool pprof -top cpu.out`.\n")
	if a := strings.TrimSpace(analysis); a != "" {
		p("\n%s\n", a)
	}
	return b.String()
}

func sortedUnits(m map[string]float64) []string {
	var units []string
	for u := range m {
		units = append(units, u)
	}
	slices.Sort(units)
	return units
}
