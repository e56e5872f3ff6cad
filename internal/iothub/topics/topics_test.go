package topics

import (
	"maps"
	"testing"
)

func TestParseTwinResponse(t *testing.T) {
	tests := []struct {
		topic   string
		want    Response
		wantErr bool
	}{
		{topic: "$iothub/twin/res/200/?$rid=7", want: Response{Status: 200, RID: "7"}},
		{topic: "$iothub/twin/res/204/?$rid=ab-cd&$version=12", want: Response{Status: 204, RID: "ab-cd", Version: 12}},
		{topic: "$iothub/twin/res/429/?$rid=1&other=x", want: Response{Status: 429, RID: "1"}},
		{topic: "$iothub/twin/res/200/?$version=3", wantErr: true},        // no $rid
		{topic: "$iothub/twin/res/200/?$rid=", wantErr: true},             // empty $rid
		{topic: "$iothub/twin/res/abc/?$rid=1", wantErr: true},            // status not a number
		{topic: "$iothub/twin/res/42/?$rid=1", wantErr: true},             // not an HTTP status
		{topic: "$iothub/twin/res/204/?$rid=1&$version=x", wantErr: true}, // bad version
		{topic: "$iothub/methods/POST/x/?$rid=1", wantErr: true},          // not a twin response
	}
	for _, tt := range tests {
		got, err := ParseTwinResponse(tt.topic)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseTwinResponse(%q) error = %v, want error %v", tt.topic, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseTwinResponse(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestTwinTopicsRoundTrip(t *testing.T) {
	if got, want := TwinGet("5"), "$iothub/twin/GET/?$rid=5"; got != want {
		t.Errorf("TwinGet = %q, want %q", got, want)
	}
	if got, want := ReportedPatch("6"), "$iothub/twin/PATCH/properties/reported/?$rid=6"; got != want {
		t.Errorf("ReportedPatch = %q, want %q", got, want)
	}
	if got, want := TwinResponse(200, "7", 0), "$iothub/twin/res/200/?$rid=7"; got != want {
		t.Errorf("TwinResponse = %q, want %q", got, want)
	}
	r, err := ParseTwinResponse(TwinResponse(204, "8", 13))
	if err != nil || r != (Response{Status: 204, RID: "8", Version: 13}) {
		t.Errorf("ParseTwinResponse(TwinResponse(204, 8, 13)) = %+v, %v", r, err)
	}
	desired := DesiredPatch(42)
	if desired != "$iothub/twin/PATCH/properties/desired/?$version=42" {
		t.Errorf("DesiredPatch(42) = %q", desired)
	}
	if v, ok := DesiredPatchVersion(desired); !ok || v != 42 {
		t.Errorf("DesiredPatchVersion(%q) = %d, %v; want 42, true", desired, v, ok)
	}
	for _, bad := range []string{"$iothub/twin/PATCH/properties/desired/", "$iothub/twin/PATCH/properties/desired/?$version=x", "$iothub/twin/res/200/?$version=1"} {
		if v, ok := DesiredPatchVersion(bad); ok {
			t.Errorf("DesiredPatchVersion(%q) = %d, true; want false", bad, v)
		}
	}
}

func TestMethodTopics(t *testing.T) {
	req := MethodRequest("reboot", "3")
	if req != "$iothub/methods/POST/reboot/?$rid=3" {
		t.Errorf("MethodRequest = %q", req)
	}
	if name, rid, err := ParseMethodRequest(req); err != nil || name != "reboot" || rid != "3" {
		t.Errorf("ParseMethodRequest(%q) = %q, %q, %v", req, name, rid, err)
	}
	for _, bad := range []string{"$iothub/methods/POST//?$rid=1", "$iothub/methods/POST/x/", "$iothub/methods/POST/x", "$iothub/twin/GET/?$rid=1"} {
		if _, _, err := ParseMethodRequest(bad); err == nil {
			t.Errorf("ParseMethodRequest(%q) succeeded", bad)
		}
	}
	res := MethodResponse(201, "ab")
	if res != "$iothub/methods/res/201/?$rid=ab" {
		t.Errorf("MethodResponse = %q", res)
	}
	// A device picks its method status freely, HTTP status or not.
	for topic, want := range map[string]Response{
		res:                                 {Status: 201, RID: "ab"},
		"$iothub/methods/res/-1/?$rid=9":    {Status: -1, RID: "9"},
		"$iothub/methods/res/12345/?$rid=9": {Status: 12345, RID: "9"},
	} {
		if got, err := ParseMethodResponse(topic); err != nil || got != want {
			t.Errorf("ParseMethodResponse(%q) = %+v, %v; want %+v", topic, got, err, want)
		}
	}
	for _, bad := range []string{"$iothub/methods/res/x/?$rid=1", "$iothub/methods/res/200/", "$iothub/twin/res/200/?$rid=1"} {
		if _, err := ParseMethodResponse(bad); err == nil {
			t.Errorf("ParseMethodResponse(%q) succeeded", bad)
		}
	}
}

func TestRequestID(t *testing.T) {
	tests := []struct {
		topic, want string
		ok          bool
	}{
		{"$iothub/twin/GET/?$rid=42", "42", true},
		{"$iothub/twin/GET/?$rid=6f9619ff-8b86-d011-b42d-00cf4fc964ff", "6f9619ff-8b86-d011-b42d-00cf4fc964ff", true},
		{"$iothub/twin/PATCH/properties/reported/?foo=1&$rid=a%2Fb", "a%2Fb", true},
		{"$iothub/twin/GET/?%24rid=7", "7", true},
		{"$iothub/twin/GET/?$rid=", "", true},
		{"$iothub/twin/GET/?rid=7", "", false},
		{"$iothub/twin/GET/", "", false},
	}
	for _, tt := range tests {
		got, ok := RequestID(tt.topic)
		if got != tt.want || ok != tt.ok {
			t.Errorf("RequestID(%q) = %q, %v; want %q, %v", tt.topic, got, ok, tt.want, tt.ok)
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
		id := ClientID(tt.device, tt.module)
		if id != tt.wantID {
			t.Errorf("ClientID(%q, %q) = %q, want %q", tt.device, tt.module, id, tt.wantID)
		}
		if got := Username("hub.example.net", id, tt.ua); got != tt.wantUser {
			t.Errorf("Username(%q) = %q, want %q", id, got, tt.wantUser)
		}
		d, m, err := ParseClientID(id)
		if err != nil || d != tt.device || m != tt.module {
			t.Errorf("ParseClientID(%q) = %q, %q, %v", id, d, m, err)
		}
	}
	for _, bad := range []string{"", "/m", "d/", "d/m/x", "d 1"} {
		if _, _, err := ParseClientID(bad); err == nil {
			t.Errorf("ParseClientID(%q) succeeded", bad)
		}
	}
}

func TestEventsTopics(t *testing.T) {
	tests := []struct {
		device, module string
		props          map[string]string
		want           string
	}{
		{"d", "", nil, "devices/d/messages/events/"},
		{"d", "m", nil, "devices/d/modules/m/messages/events/"},
		{"d", "m", map[string]string{"$.ct": "application/json", "$.ce": "utf-8", "a b": "c&d", "p": "1+1"},
			"devices/d/modules/m/messages/events/%24.ce=utf-8&%24.ct=application%2Fjson&a%20b=c%26d&p=1%2B1"},
	}
	for _, tt := range tests {
		got := Events(tt.device, tt.module, tt.props)
		if got != tt.want {
			t.Errorf("Events(%q, %q, %v) = %q, want %q", tt.device, tt.module, tt.props, got, tt.want)
			continue
		}
		bag, ok := EventsBag(tt.device, tt.module, got)
		if !ok {
			t.Errorf("EventsBag(%q) is not a telemetry topic of %s/%s", got, tt.device, tt.module)
			continue
		}
		props := ParseProperties(bag)
		if len(props) != len(tt.props) || (len(props) > 0 && !maps.Equal(props, tt.props)) {
			t.Errorf("ParseProperties(%q) = %v; want %v", bag, props, tt.props)
		}
	}
	for _, tt := range []struct {
		device, module, topic string
		ok                    bool
	}{
		{"d", "m", "devices/d/modules/m/messages/events", true},
		{"d", "m", "devices/d/modules/m/messages/eventsX", false},
		{"d", "m", "devices/d/messages/events/", false},
		{"d", "", "devices/e/messages/events/", false},
	} {
		if _, ok := EventsBag(tt.device, tt.module, tt.topic); ok != tt.ok {
			t.Errorf("EventsBag(%q, %q, %q) ok = %v, want %v", tt.device, tt.module, tt.topic, ok, tt.ok)
		}
	}
}

func TestParseProperties(t *testing.T) {
	got := ParseProperties("%24.mid=1&$.cid=x+y%20z&flag&&k=a%2Fb&bad=%zz&k=last")
	want := map[string]string{"$.mid": "1", "$.cid": "x+y z", "flag": "", "bad": "%zz", "k": "last"}
	if !maps.Equal(got, want) {
		t.Errorf("ParseProperties = %v; want %v", got, want)
	}
	if got := ParseProperties(""); len(got) != 0 {
		t.Errorf("ParseProperties(\"\") = %v; want none", got)
	}
}
