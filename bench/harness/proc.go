package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Run is one process run, timed from just before start to exit.
type Run struct {
	Wall   time.Duration
	CPU    time.Duration // user + system
	MaxRSS int64         // peak resident set, bytes (wait4 rusage ru_maxrss)
	Stdout []byte
}

// runner runs short-lived commands with their output in files, so that no
// copying goroutine sits between the process's exit and Wait returning.
type runner struct {
	stdout *os.File
	stderr *os.File
}

func newRunner(workDir string) (*runner, error) {
	out, err := os.CreateTemp(workDir, "stdout-*")
	if err != nil {
		return nil, err
	}
	errf, err := os.CreateTemp(workDir, "stderr-*")
	if err != nil {
		out.Close()
		return nil, err
	}
	return &runner{stdout: out, stderr: errf}, nil
}

func (r *runner) Close() {
	r.stdout.Close()
	r.stderr.Close()
}

// run runs argv in dir with env and fails unless it exits 0.
func (r *runner) run(ctx context.Context, dir string, env, argv []string) (Run, error) {
	for _, f := range []*os.File{r.stdout, r.stderr} {
		if err := f.Truncate(0); err != nil {
			return Run{}, err
		}
		if _, err := f.Seek(0, 0); err != nil {
			return Run{}, err
		}
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Run{}, err
	}
	err := cmd.Wait()
	wall := time.Since(start)
	if err != nil {
		stderr, _ := os.ReadFile(r.stderr.Name())
		return Run{}, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(stderr))
	}
	stdout, err := os.ReadFile(r.stdout.Name())
	if err != nil {
		return Run{}, err
	}
	st := cmd.ProcessState
	return Run{
		Wall:   wall,
		CPU:    st.UserTime() + st.SystemTime(),
		MaxRSS: maxRSS(st),
		Stdout: stdout,
	}, nil
}

// maxRSS reads ru_maxrss (kilobytes on Linux) of an exited process.
func maxRSS(st *os.ProcessState) int64 {
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024
	}
	return 0
}

// Memory is a live process's resident set from /proc/PID/status.
type Memory struct {
	RSS  int64 // VmRSS, bytes
	Peak int64 // VmHWM, bytes
}

func readMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[0], 10, 64)
		switch key {
		case "VmRSS":
			m.RSS = kb * 1024
		case "VmHWM":
			m.Peak = kb * 1024
		}
	}
	return m, sc.Err()
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on Linux.
const clockTicks = 100

// cpuTime reads a live process's user + system CPU time from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields resume after its ')'.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// selfCPU is this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mb(bytes int64) float64 { return round3(float64(bytes) / (1 << 20)) }

// systemCPU reads the busy and total time of all CPUs from /proc/stat, in
// clock ticks; idle and iowait count as not busy.
func systemCPU() (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// loadAverage is the one-minute load average.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// referenceTask times a fixed single-threaded CPU task (SHA-256 over
// 256 MiB): on a shared or virtual machine it shows how fast the CPU was
// at that moment, so that runs can be compared.
func referenceTask() time.Duration {
	block := make([]byte, 1<<20)
	h := sha256.New()
	start := time.Now()
	for range 256 {
		h.Write(block)
	}
	h.Sum(nil)
	return time.Since(start)
}
