package updatetwin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/servicecmd"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
)

// ackKeys returns the top-level desired properties an update sets (not
// removes): the ones a module acknowledges.
func ackKeys(patch map[string]json.RawMessage) []string {
	var keys []string
	for k, v := range patch {
		if !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// ack is IoT Plug and Play's acknowledgement of a writable property.
type ack struct {
	Value json.RawMessage `json:"value"`
	AC    *int            `json:"ac"`
	AV    *int64          `json:"av"`
	AD    string          `json:"ad"`
}

// ackStatus says where one property stands.
type ackStatus struct {
	done     bool
	rejected bool
	reason   string // why it is not (yet) acknowledged, or the rejection
}

// checkAck compares the reported member for key with the desired value
// written at version. The module may acknowledge the value it was sent
// (the patch's) or the merged value now in the twin.
func checkAck(reported json.RawMessage, version int64, wants ...json.RawMessage) ackStatus {
	if reported == nil {
		return ackStatus{reason: "not reported"}
	}
	var a ack
	if err := json.Unmarshal(reported, &a); err != nil || a.AC == nil || a.AV == nil {
		return ackStatus{reason: "reported, but not as an acknowledgement {value, ac, av}"}
	}
	if *a.AV < version {
		return ackStatus{reason: fmt.Sprintf("acknowledges desired $version %d, waiting for %d", *a.AV, version)}
	}
	if *a.AC < 200 || *a.AC > 299 {
		reason := fmt.Sprintf("rejected with ac %d", *a.AC)
		if a.AD != "" {
			reason += ": " + a.AD
		}
		return ackStatus{rejected: true, reason: reason}
	}
	for _, w := range wants {
		if sameJSON(a.Value, w) {
			return ackStatus{done: true}
		}
	}
	return ackStatus{reason: fmt.Sprintf("acknowledged value %s is not the desired value", cli.CompactJSON(a.Value))}
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// waitForAcks polls the twin until the module has acknowledged every
// property the update set, a property is rejected, or --wait-ack runs out.
// It returns the acknowledgements seen.
func (o *Options) waitForAcks(ctx context.Context, client *registry.Client, target servicecmd.Target, after iothub.Twin) (map[string]json.RawMessage, error) {
	keys := ackKeys(o.desiredPatch)
	desired := after.Properties.Desired
	version := iothub.DocVersion(desired)
	fmt.Fprintf(o.Env.Stderr, "waiting up to %s for the module to acknowledge %s (desired $version %d)\n",
		o.WaitAck, strings.Join(keys, ", "), version)

	interval := o.PollInterval
	if interval <= 0 {
		interval = defaultPollInterval
	}
	waitCtx, cancel := context.WithTimeout(ctx, o.WaitAck)
	defer cancel()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	twin := after
	for {
		var reported map[string]json.RawMessage
		if twin.Properties != nil {
			reported = twin.Properties.Reported
		}
		acked := map[string]json.RawMessage{}
		var missing []string
		for _, k := range keys {
			st := checkAck(reported[k], version, o.desiredPatch[k], desired[k])
			switch {
			case st.rejected:
				return acked, fmt.Errorf("the module rejected desired property %q: %s", k, st.reason)
			case st.done:
				acked[k] = reported[k]
			default:
				missing = append(missing, fmt.Sprintf("%s (%s)", k, st.reason))
			}
		}
		if len(missing) == 0 {
			return acked, nil
		}

		select {
		case <-ctx.Done():
			return acked, ctx.Err()
		case <-waitCtx.Done():
			return acked, timeoutError(o.WaitAck, version, missing)
		case <-ticker.C:
		}
		next, err := client.GetModuleTwin(waitCtx, o.DeviceID, o.ModuleID)
		switch {
		case err == nil:
			twin = next
		case ctx.Err() != nil:
			return acked, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && waitCtx.Err() != nil:
			return acked, timeoutError(o.WaitAck, version, missing)
		default:
			return acked, fmt.Errorf("read module twin %s/%s while waiting: %w", o.DeviceID, o.ModuleID, target.Explain(err))
		}
	}
}

func timeoutError(d time.Duration, version int64, missing []string) error {
	return cli.WithHint(
		fmt.Errorf("no acknowledgement of desired $version %d within %s for: %s", version, d, strings.Join(missing, "; ")),
		"is the module connected? receive-twin-patch --ack acknowledges desired properties")
}
