package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/moduletwin/iothub-module-twin/bench/loadgen"
	"github.com/moduletwin/iothub-module-twin/internal/connstr"
)

// LatencyResult is one receiver's patch latency: from just before the
// service's PATCH request to the moment its output line was read.
type LatencyResult struct {
	Side            string    `json:"side"`
	Argv            []string  `json:"argv"`
	Patches         int       `json:"patches"`
	LatencyMS       Summary   `json:"latencyMs"`
	PatchResponseMS Summary   `json:"patchResponseMs"`
	RawLatencyMS    []float64 `json:"rawLatencyMs"`
}

// Footprint is the receivers' memory: resident set after sitting
// connected and idle, and the peak of the whole run (wait4 at exit).
type Footprint struct {
	IdleSeconds   float64   `json:"idleSeconds"`
	Receivers     int       `json:"receiversPerSide"`
	GoIdleRSSMB   Summary   `json:"goIdleRssMb"`
	NodeIdleRSSMB Summary   `json:"nodeIdleRssMb"`
	GoPeakRSSMB   Summary   `json:"goPeakRssMb"`
	NodePeakRSSMB Summary   `json:"nodePeakRssMb"`
	RawGoIdleMB   []float64 `json:"rawGoIdleRssMb"`
	RawNodeIdleMB []float64 `json:"rawNodeIdleRssMb"`
}

// ClientResults are the figures of the command-line clients.
type ClientResults struct {
	Cold      []ColdResult    `json:"cold"`
	Latency   []LatencyResult `json:"latency"`
	Footprint Footprint       `json:"footprint"`
}

// runClients starts receivers of both kinds, runs the cold-start pairs
// while they sit idle, samples their memory once they have been connected
// for cfg.idle, and then measures patch latency alternately on one of each.
func runClients(ctx context.Context, cfg config, em *emulatorProc, env []string, r *runner, work string) (ClientResults, error) {
	var res ClientResults
	svc, err := loadgen.NewService(em.connectionString, cfg.tls, 2)
	if err != nil {
		return res, err
	}
	defer svc.Close()

	argv := map[string][]string{
		"go":   {filepath.Join(cfg.binDir, "receive-twin-patch"), "--output", "json"},
		"node": {cfg.node, "receive-twin-patch.js"},
	}
	dirs := map[string]string{"go": "", "node": cfg.nodeDir}
	recv := map[string][]*receiver{}
	defer func() {
		for _, side := range recv {
			for _, rc := range side {
				rc.stop()
			}
		}
	}()
	for i := 0; i < cfg.receivers; i++ {
		for _, side := range []string{"go", "node"} {
			deviceID := fmt.Sprintf("recv-%s-%d", side, i)
			if err := svc.CreateDevice(ctx, deviceID); err != nil {
				return res, err
			}
			m, err := svc.CreateModule(ctx, deviceID, "m")
			if err != nil {
				return res, err
			}
			cs := connstr.ConnectionString{HostName: hostName, DeviceID: m.DeviceID, ModuleID: m.ModuleID, SharedAccessKey: m.Key}
			rc, err := startReceiver(side, argv[side], dirs[side], withEnv(env, "IOTHUB_MODULE_CONNECTION_STRING="+cs.Format()), m)
			if err != nil {
				return res, err
			}
			recv[side] = append(recv[side], rc)
			if err := rc.waitReady(ctx, 30*time.Second); err != nil {
				return res, err
			}
		}
	}
	connectedAt := time.Now()
	logf("clients: %d receivers of each kind connected; cold runs while they sit idle", cfg.receivers)

	if res.Cold, err = runCold(ctx, cfg, r, env, em.caFile, work); err != nil {
		return res, err
	}

	if wait := time.Until(connectedAt.Add(cfg.idle)); wait > 0 {
		logf("clients: waiting %s more before sampling idle memory", wait.Round(time.Second))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	fp := Footprint{IdleSeconds: time.Since(connectedAt).Seconds(), Receivers: cfg.receivers}
	for _, side := range []string{"go", "node"} {
		var idle []float64
		for _, rc := range recv[side] {
			m, err := readMemory(rc.pid())
			if err != nil {
				return res, fmt.Errorf("%s receiver: %w", side, err)
			}
			idle = append(idle, mb(m.RSS))
		}
		if side == "go" {
			fp.RawGoIdleMB, fp.GoIdleRSSMB = idle, summarize(idle)
		} else {
			fp.RawNodeIdleMB, fp.NodeIdleRSSMB = idle, summarize(idle)
		}
	}
	logf("clients: idle RSS after %.0f s: ours %.1f MB, Node.js %.1f MB", fp.IdleSeconds, fp.GoIdleRSSMB.Median, fp.NodeIdleRSSMB.Median)

	pair := []*receiver{recv["go"][0], recv["node"][0]}
	lat, err := measureLatency(ctx, cfg, svc, pair)
	if err != nil {
		return res, err
	}
	for i := range lat {
		lat[i].Argv = append([]string{filepath.Base(argv[pair[i].side][0])}, argv[pair[i].side][1:]...)
	}
	res.Latency = lat

	for _, side := range []string{"go", "node"} {
		var peak []float64
		for _, rc := range recv[side] {
			p, err := rc.stop()
			if err != nil {
				return res, err
			}
			peak = append(peak, mb(p))
		}
		if side == "go" {
			fp.GoPeakRSSMB = summarize(peak)
		} else {
			fp.NodePeakRSSMB = summarize(peak)
		}
	}
	recv = nil
	res.Footprint = fp
	return res, nil
}

// measureLatency sends warm-up and then cfg.patches desired patches to
// each receiver in turn (ours, the peer's, ours, …), one at a time.
func measureLatency(ctx context.Context, cfg config, svc *loadgen.Service, pair []*receiver) ([]LatencyResult, error) {
	lat := make([][]time.Duration, len(pair))
	resp := make([][]time.Duration, len(pair))
	for i := -cfg.latencyWarmup; i < cfg.patches; i++ {
		for j, rc := range pair {
			body := loadgen.DesiredPatchBody(map[string]any{"seq": i})
			sent := time.Now()
			if _, err := svc.PatchTwin(ctx, rc.module, body); err != nil {
				return nil, err
			}
			answered := time.Now()
			printed, err := rc.waitPatch(i, 10*time.Second)
			if err != nil {
				return nil, err
			}
			if i >= 0 {
				lat[j] = append(lat[j], printed.Sub(sent))
				resp[j] = append(resp[j], answered.Sub(sent))
			}
		}
	}
	out := make([]LatencyResult, len(pair))
	for j, rc := range pair {
		raw := durationsMS(lat[j])
		out[j] = LatencyResult{Side: rc.side, Patches: cfg.patches, LatencyMS: summarize(raw),
			PatchResponseMS: summarize(durationsMS(resp[j])), RawLatencyMS: raw}
		logf("latency: %s receiver p50 %.2f ms, p99 %.2f ms", rc.side, out[j].LatencyMS.Median, out[j].LatencyMS.P99)
	}
	return out, nil
}
