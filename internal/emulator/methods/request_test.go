package methods

import (
	"testing"
	"time"
)

func TestParseRequestDefaults(t *testing.T) {
	r, err := ParseRequest([]byte(`{"methodName":"reboot","payload":{ "a" : [1, 2] },"responseTimeoutInSeconds":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "reboot" || string(r.Payload) != `{"a":[1,2]}` || r.ResponseTimeout != 30*time.Second || r.ConnectTimeout != 0 {
		t.Fatalf("got %+v, want reboot, compact payload, 30 s response and 0 s connect timeout", r)
	}
	r, err = ParseRequest([]byte(`{"methodName":"m","responseTimeoutInSeconds":300,"connectTimeoutInSeconds":300}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Payload) != "null" || r.ResponseTimeout != 300*time.Second || r.ConnectTimeout != 300*time.Second {
		t.Fatalf("got %+v, want payload null and both timeouts 300 s", r)
	}
}

func TestTimeSpan(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "00:00:00", 10 * time.Second: "00:00:10", 300 * time.Second: "00:05:00", 3725 * time.Second: "01:02:05"} {
		if got := timeSpan(d); got != want {
			t.Errorf("timeSpan(%v) = %q, want %q", d, got, want)
		}
	}
}
