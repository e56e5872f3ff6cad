package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moduletwin/iothub-module-twin/bench/loadgen"
	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// startDurable starts an in-process emulator that keeps its data in a
// temporary directory, as `iothub-emulator --data-dir` does.
func startDurable(b *testing.B) (*emulator.Emulator, *tls.Config) {
	b.Helper()
	em, err := emulator.Start(context.Background(), emulator.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { em.Close() })
	pem, err := os.ReadFile(em.CAFile())
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return em, &tls.Config{RootCAs: pool, ServerName: em.HostName(), MinVersion: tls.VersionTLS12}
}

// createModules creates n modules, at most iothub.MaxModulesPerDevice to
// a device.
func createModules(b *testing.B, svc *loadgen.Service, prefix string, n int) []loadgen.Module {
	b.Helper()
	ctx := context.Background()
	var mods []loadgen.Module
	for i := range n {
		deviceID := fmt.Sprintf("%s-%d", prefix, i/iothub.MaxModulesPerDevice)
		if i%iothub.MaxModulesPerDevice == 0 {
			if err := svc.CreateDevice(ctx, deviceID); err != nil {
				b.Fatal(err)
			}
		}
		m, err := svc.CreateModule(ctx, deviceID, fmt.Sprintf("m%d", i%iothub.MaxModulesPerDevice))
		if err != nil {
			b.Fatal(err)
		}
		mods = append(mods, m)
	}
	return mods
}

// BenchmarkTwinPatchDelivered is a durable twin PATCH over HTTPS
// keep-alive followed by its delivery to the module over MQTT: each of 64
// concurrent callers patches its own connected module and waits for the
// patch to arrive before sending the next. The idle= variants also hold
// that many other modules connected, doing nothing.
func BenchmarkTwinPatchDelivered(b *testing.B) {
	for _, idle := range []int{0, 4000} {
		// Set up once: b.Run calls its function again for each b.N.
		patch, closeAll := setUpDeliveredPatches(b, idle)
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) {
			b.SetParallelism((patchCallers + 1) / 2) // goroutines = parallelism × GOMAXPROCS (2 here)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				next := patch()
				for pb.Next() {
					if err := next(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "patches/s")
		})
		closeAll()
	}
}

const patchCallers = 64

// setUpDeliveredPatches starts an emulator with idle plus patchCallers
// modules connected. Each call of patch hands out the next caller's
// function, which PATCHes its module and waits for the delivery.
func setUpDeliveredPatches(b *testing.B, idle int) (patch func() func() error, closeAll func()) {
	em, tlsConf := startDurable(b)
	svc, err := loadgen.NewService(em.ServiceConnectionString(), tlsConf, patchCallers)
	if err != nil {
		b.Fatal(err)
	}
	cfg := loadgen.ModuleConfig{Addr: em.MQTTAddr(), HostName: em.HostName(), TLS: tlsConf, KeepAlive: 5 * time.Minute}
	var conns []*loadgen.ModuleConn
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
		svc.Close()
		em.Close()
	}
	ctx := context.Background()
	for _, m := range createModules(b, svc, "idle", idle) {
		c, err := loadgen.DialModule(ctx, cfg, m, nil)
		if err != nil {
			closeAll()
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	mods := createModules(b, svc, "patch", patchCallers)
	arrived := make([]chan int64, patchCallers)
	for i, m := range mods {
		arrived[i] = make(chan int64, 16)
		c, err := loadgen.DialModule(ctx, cfg, m, func(p loadgen.Patch) { arrived[i] <- p.Version })
		if err != nil {
			closeAll()
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	var next atomic.Int64
	var seq atomic.Int64
	patch = func() func() error {
		i := int(next.Add(1)-1) % patchCallers
		return func() error {
			body := fmt.Appendf(nil, `{"properties":{"desired":{"seq":%d}}}`, seq.Add(1))
			v, err := svc.PatchTwin(ctx, mods[i], body)
			if err != nil {
				return err
			}
			for got := int64(0); got < v; {
				select {
				case got = <-arrived[i]:
				case <-time.After(10 * time.Second):
					return fmt.Errorf("patch %d of %s/%s not delivered", v, mods[i].DeviceID, mods[i].ModuleID)
				}
			}
			return nil
		}
	}
	return patch, closeAll
}

// BenchmarkRegistryCreateModule is a durable module create over HTTPS
// keep-alive, 32 concurrent callers.
func BenchmarkRegistryCreateModule(b *testing.B) {
	const callers = 32
	em, tlsConf := startDurable(b)
	svc, err := loadgen.NewService(em.ServiceConnectionString(), tlsConf, callers)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(callers / 2)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1) - 1
			deviceID := fmt.Sprintf("create-%d", i/iothub.MaxModulesPerDevice)
			if i%iothub.MaxModulesPerDevice == 0 {
				if err := svc.CreateDevice(ctx, deviceID); err != nil {
					b.Error(err)
					return
				}
			}
			for {
				_, err := svc.CreateModule(ctx, deviceID, fmt.Sprintf("m%d", i%iothub.MaxModulesPerDevice))
				if err == nil {
					break
				}
				// The caller creating this module's device may not be done yet.
				if !isNotFound(err) {
					b.Error(err)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
}

// BenchmarkHubUpdateTwin is the hub core's durable desired-properties
// merge without the network: 64 concurrent callers, each on its own
// module, every change fdatasync'ed (shared by group commit) and handed to
// the MQTT gateway.
func BenchmarkHubUpdateTwin(b *testing.B) {
	const callers = 64
	em, tlsConf := startDurable(b)
	svc, err := loadgen.NewService(em.ServiceConnectionString(), tlsConf, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	mods := createModules(b, svc, "core", callers)
	h := em.Hub()
	var next atomic.Int64
	b.SetParallelism(callers / 2)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		m := mods[int(next.Add(1)-1)%callers]
		ref := hub.IdentityRef{DeviceID: m.DeviceID, ModuleID: m.ModuleID}
		seq := 0
		for pb.Next() {
			seq++
			if _, err := h.UpdateTwin(ref, fmt.Appendf(nil, `{"properties":{"desired":{"seq":%d}}}`, seq), hub.IfMatch{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "updates/s")
}

func isNotFound(err error) bool {
	var se *loadgen.StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusNotFound
}
