package twinclient

import (
	"testing"
	"time"
)

func TestParseResponseTopic(t *testing.T) {
	tests := []struct {
		topic   string
		want    response
		wantErr bool
	}{
		{topic: "$iothub/twin/res/200/?$rid=7", want: response{status: 200, rid: "7"}},
		{topic: "$iothub/twin/res/204/?$rid=ab-cd&$version=12", want: response{status: 204, rid: "ab-cd", version: 12}},
		{topic: "$iothub/twin/res/429/?$rid=1&other=x", want: response{status: 429, rid: "1"}},
		{topic: "$iothub/twin/res/200/?$version=3", wantErr: true},        // no $rid
		{topic: "$iothub/twin/res/abc/?$rid=1", wantErr: true},            // status not a number
		{topic: "$iothub/twin/res/42/?$rid=1", wantErr: true},             // not an HTTP status
		{topic: "$iothub/twin/res/204/?$rid=1&$version=x", wantErr: true}, // bad version
		{topic: "$iothub/methods/POST/x/?$rid=1", wantErr: true},          // not a twin response
	}
	for _, tt := range tests {
		got, err := parseResponseTopic(tt.topic)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseResponseTopic(%q) error = %v, want error %v", tt.topic, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("parseResponseTopic(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestUsernameAndClientID(t *testing.T) {
	tests := []struct {
		device, module, ua string
		wantUser, wantID   string
	}{
		{"d1", "m1", "receive-twin-patch/1.0 (linux)", "hub.example.net/d1/m1/?api-version=2021-04-12&DeviceClientType=receive-twin-patch%2F1.0+%28linux%29", "d1/m1"},
		{"d1", "", "x", "hub.example.net/d1/?api-version=2021-04-12&DeviceClientType=x", "d1"},
	}
	for _, tt := range tests {
		if got := username("hub.example.net", tt.device, tt.module, tt.ua); got != tt.wantUser {
			t.Errorf("username(%q, %q) = %q, want %q", tt.device, tt.module, got, tt.wantUser)
		}
		if got := clientID(tt.device, tt.module); got != tt.wantID {
			t.Errorf("clientID(%q, %q) = %q, want %q", tt.device, tt.module, got, tt.wantID)
		}
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{cfg: config{minBackoff: 100 * time.Millisecond, maxBackoff: time.Second}}
	tests := []struct {
		failures int
		lo, hi   time.Duration
	}{
		{0, 0, 0},
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second}, // capped
		{50, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if got := c.backoff(tt.failures); got < tt.lo || got > tt.hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tt.failures, got, tt.lo, tt.hi)
			}
		}
	}
}
