package mqttgw

import (
	"testing"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
)

func TestParseClientID(t *testing.T) {
	tests := []struct {
		in      string
		want    hub.IdentityRef
		wantErr bool
	}{
		{in: "dev1", want: hub.IdentityRef{DeviceID: "dev1"}},
		{in: "dev1/mod1", want: hub.IdentityRef{DeviceID: "dev1", ModuleID: "mod1"}},
		{in: "d-1.x:y$z/m_2", want: hub.IdentityRef{DeviceID: "d-1.x:y$z", ModuleID: "m_2"}},
		{in: "", wantErr: true},
		{in: "/mod1", wantErr: true},
		{in: "dev1/", wantErr: true},
		{in: "dev1/mod1/extra", wantErr: true},
		{in: "dev 1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseClientID(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseClientID(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("parseClientID(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestCheckUsername(t *testing.T) {
	const host = "hub.example"
	tests := []struct {
		name, username, clientID string
		ok                       bool
	}{
		{"module, current form", "hub.example/d/m/?api-version=2021-04-12", "d/m", true},
		{"device, current form", "hub.example/d/?api-version=2021-04-12", "d", true},
		{"node sdk", "hub.example/d/m/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20)", "d/m", true},
		{"python sdk", "hub.example/d/m/?api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.14.0", "d/m", true},
		{"pnp model id", "hub.example/d/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3At%3B1", "d", true},
		{"legacy, no question mark", "hub.example/d/api-version=2016-11-14&DeviceClientType=iothubclient%2F1.1.7", "d", true},
		{"legacy module", "hub.example/d/m/api-version=2016-11-14", "d/m", true},
		{"nothing after the identity", "hub.example/d/m/", "d/m", true},
		{"host with port", "hub.example:8443/d/m/?api-version=2021-04-12", "d/m", true},
		{"host in other case", "HUB.example/d/?api-version=2021-04-12", "d", true},
		{"other host", "other.example/d/m/?api-version=2021-04-12", "d/m", false},
		{"host with bad port", "hub.example:x/d/?api-version=2021-04-12", "d", false},
		{"empty", "", "d", false},
		{"no slash", "hub.example", "d", false},
		{"other device", "hub.example/e/m/?api-version=2021-04-12", "d/m", false},
		{"module missing", "hub.example/d/?api-version=2021-04-12", "d/m", false},
		{"module not in client ID", "hub.example/d/m/?api-version=2021-04-12", "d", false},
		{"no slash after identity", "hub.example/d?api-version=2021-04-12", "d", false},
		{"garbage after identity", "hub.example/d/xyz", "d", false},
		{"bad query", "hub.example/d/?api-version=%zz", "d", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkUsername(tt.username, host, tt.clientID)
			if (err == nil) != tt.ok {
				t.Errorf("checkUsername(%q, %q, %q) = %v, want ok %v", tt.username, host, tt.clientID, err, tt.ok)
			}
		})
	}
}

func TestAllowedFilter(t *testing.T) {
	module := hub.IdentityRef{DeviceID: "d", ModuleID: "m"}
	device := hub.IdentityRef{DeviceID: "d"}
	tests := []struct {
		id     hub.IdentityRef
		filter string
		want   bool
	}{
		{module, "$iothub/twin/res/#", true},
		{module, "$iothub/twin/PATCH/properties/desired/#", true},
		{module, "$iothub/methods/POST/#", true},
		{device, "$iothub/streams/POST/#", true},
		{module, "devices/d/modules/m/#", true},
		{module, "devices/d/modules/m/inputs/#", true},
		{module, "devices/d/modules/other/#", false},
		{module, "devices/d/messages/devicebound/#", false},
		{device, "devices/d/messages/devicebound/#", true},
		{device, "devices/e/messages/devicebound/#", false},
		{device, "devices/d/modules/m/#", false},
		{module, "#", false},
		{module, "$iothub/#", false},
		{module, "$iothub/twin/res/+", false},
		{module, "$iothub/twin/PATCH/properties/desired/?$version=1", false},
		{module, "$SYS/#", false},
		{module, "", false},
	}
	for _, tt := range tests {
		if got := allowedFilter(tt.id, tt.filter); got != tt.want {
			t.Errorf("allowedFilter(%v, %q) = %v, want %v", tt.id, tt.filter, got, tt.want)
		}
	}
}

func TestClassifyPublish(t *testing.T) {
	module := hub.IdentityRef{DeviceID: "d", ModuleID: "m"}
	device := hub.IdentityRef{DeviceID: "d"}
	tests := []struct {
		id    hub.IdentityRef
		topic string
		want  publishKind
	}{
		{module, "$iothub/twin/GET/?$rid=1", publishTwinGet},
		{module, "$iothub/twin/PATCH/properties/reported/?$rid=ab&x=y", publishTwinReported},
		{module, "$iothub/methods/res/200/?$rid=5", publishMethodResult},
		{module, "devices/d/modules/m/messages/events/", publishTelemetry},
		{module, "devices/d/modules/m/messages/events/a=b&c=d", publishTelemetry},
		{module, "devices/d/modules/m/messages/events", publishTelemetry},
		{module, "devices/d/messages/events/", publishDenied},
		{module, "devices/d/modules/n/messages/events/", publishDenied},
		{module, "devices/d/modules/m/messages/eventsX", publishDenied},
		{device, "devices/d/messages/events/", publishTelemetry},
		{device, "devices/e/messages/events/", publishDenied},
		{module, "$iothub/twin/res/200/?$rid=1", publishDenied},
		{module, "$iothub/twin/PATCH/properties/desired/?$version=3", publishDenied},
		{module, "$iothub/twin/GET", publishDenied},
		{module, "anything", publishDenied},
	}
	for _, tt := range tests {
		if got := classifyPublish(tt.id, tt.topic); got != tt.want {
			t.Errorf("classifyPublish(%v, %q) = %v, want %v", tt.id, tt.topic, got, tt.want)
		}
	}
}

func TestInternalTopicRoundTrip(t *testing.T) {
	for _, clientID := range []string{"d", "d/m", "a+b#c/$m", "@x/y"} {
		const topic = "$iothub/twin/res/200/?$rid=1"
		internal := internalPrefix(clientID) + topic
		if got := externalTopic(internal); got != topic {
			t.Errorf("externalTopic(%q) = %q, want %q", internal, got, topic)
		}
	}
	if a, b := internalPrefix("d/m"), internalPrefix("d/n"); a == b {
		t.Errorf("internalPrefix gives %q for two identities", a)
	}
}
