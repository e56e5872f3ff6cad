package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Setup describes the machine, the software and the method.
type Setup struct {
	Date        string            `json:"date"`
	CPU         string            `json:"cpu"`
	Cores       int               `json:"cores"`
	MemoryGB    float64           `json:"memoryGb"`
	Kernel      string            `json:"kernel"`
	Go          string            `json:"go"`
	Node        string            `json:"node"`
	NodeSDKs    map[string]string `json:"nodeSdks"`
	FsyncMS     Summary           `json:"fsyncMs"` // 4 KiB write + fdatasync on the data directory's file system
	Runs        int               `json:"coldRuns"`
	Warmup      int               `json:"coldWarmup"`
	Patches     int               `json:"patches"`
	IdleSeconds float64           `json:"idleSeconds"`

	LatencyWarmup     int     `json:"latencyWarmup"`
	Levels            []int   `json:"levels"`
	LevelWorkers      int     `json:"levelWorkers"`
	PatchWorkers      []int   `json:"patchWorkers"`
	Probes            int     `json:"probes"`
	SettleSeconds     float64 `json:"settleSeconds"`
	SustainSeconds    float64 `json:"sustainSeconds"`
	SustainWarmupSecs float64 `json:"sustainWarmupSeconds"`
}

func describeSetup(ctx context.Context, cfg config, work string) (Setup, error) {
	s := Setup{
		Date:        time.Now().UTC().Format("2006-01-02"),
		Cores:       runtime.NumCPU(),
		Go:          runtime.Version(),
		Runs:        cfg.runs,
		Warmup:      cfg.warmup,
		Patches:     cfg.patches,
		IdleSeconds: cfg.idle.Seconds(),
		NodeSDKs:    map[string]string{},

		LatencyWarmup:     cfg.latencyWarmup,
		Levels:            cfg.levels,
		LevelWorkers:      cfg.levelWorkers,
		PatchWorkers:      cfg.patchWorkers,
		Probes:            cfg.probes,
		SettleSeconds:     cfg.settle.Seconds(),
		SustainSeconds:    cfg.throughputTime.Seconds(),
		SustainWarmupSecs: cfg.throughputWarmup.Seconds(),
	}
	s.CPU = cpuModel()
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		s.MemoryGB = round3(float64(si.Totalram) * float64(si.Unit) / (1 << 30))
	}
	var un syscall.Utsname
	if syscall.Uname(&un) == nil {
		s.Kernel = utsString(un.Release[:])
	}
	if out, err := exec.CommandContext(ctx, cfg.node, "--version").Output(); err == nil {
		s.Node = strings.TrimSpace(string(out))
	}
	for _, pkg := range []string{"azure-iothub", "azure-iot-device", "azure-iot-device-mqtt"} {
		b, err := os.ReadFile(filepath.Join(cfg.nodeDir, "node_modules", pkg, "package.json"))
		if err != nil {
			return s, err
		}
		var p struct{ Version string }
		if err := json.Unmarshal(b, &p); err != nil {
			return s, err
		}
		s.NodeSDKs[pkg] = p.Version
	}
	fs, err := fsyncLatency(work, 200)
	if err != nil {
		return s, err
	}
	s.FsyncMS = fs
	return s, nil
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// fsyncLatency times n rewrites of a 4 KiB block, each followed by
// fdatasync, as a commit of the hub's store ends.
func fsyncLatency(dir string, n int) (Summary, error) {
	f, err := os.CreateTemp(dir, "fsync-*")
	if err != nil {
		return Summary{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	var took []time.Duration
	for i := range n {
		block[0] = byte(i)
		start := time.Now()
		if _, err := f.WriteAt(block, int64(i%16)*4096); err != nil {
			return Summary{}, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return Summary{}, err
		}
		took = append(took, time.Since(start))
	}
	return summarize(durationsMS(took)), nil
}
