package mqttgw_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/events"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/sas"
)

const methodsFilter = "$iothub/methods/POST/#"

// methodAnswer is what a service call to a direct method got back.
type methodAnswer struct {
	status int
	code   string // iothub-errorcode header
	body   []byte
}

// invoke calls a direct method over REST with the service policy's token
// (or auth when set) and returns the answer, whatever its status.
func (e *env) invoke(t *testing.T, id identity, body string) methodAnswer {
	t.Helper()
	return e.invokeAs(t, id, body, "")
}

func (e *env) invokeAs(t *testing.T, id identity, body, auth string) methodAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		e.restURL+id.twinPath()+"/methods?api-version="+iothub.APIVersion, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth == "" {
		auth, _ = e.service.Token(sas.ServiceResource(e.svcHost), time.Hour)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	// The calls here wait up to a few response timeouts; the harness
	// client's own limit would cut them short.
	cl := &http.Client{Transport: e.rest.Transport, Timeout: time.Minute}
	resp, err := cl.Do(req)
	if err != nil {
		t.Errorf("POST %s/methods: %v", id.twinPath(), err)
		return methodAnswer{}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return methodAnswer{status: resp.StatusCode, code: resp.Header.Get("iothub-errorcode"), body: b}
}

// invokeAsync runs invoke on its own goroutine.
func (e *env) invokeAsync(t *testing.T, id identity, body string) <-chan methodAnswer {
	ch := make(chan methodAnswer, 1)
	go func() { ch <- e.invoke(t, id, body) }()
	return ch
}

func wait(t *testing.T, ch <-chan methodAnswer) methodAnswer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(time.Minute):
		t.Fatal("the method call never ended")
	}
	return methodAnswer{}
}

var methodRequestTopic = regexp.MustCompile(`^\$iothub/methods/POST/([^/]+)/\?\$rid=([^&]+)$`)

// methodRequest is a request as the device received it.
type methodRequest struct {
	name, rid string
	payload   []byte
}

// nextRequest returns the next method request c receives.
func (c *client) nextRequest(t *testing.T) methodRequest {
	t.Helper()
	m := c.next(t)
	got := methodRequestTopic.FindStringSubmatch(m.Topic())
	if got == nil {
		t.Fatalf("received %q, want a method request $iothub/methods/POST/{name}/?$rid={rid}", m.Topic())
	}
	if m.Qos() != 0 {
		t.Errorf("method request arrived with QoS %d, want 0", m.Qos())
	}
	return methodRequest{name: got[1], rid: got[2], payload: m.Payload()}
}

func (c *client) answer(t *testing.T, status, rid, body string) {
	t.Helper()
	c.publish(t, "$iothub/methods/res/"+status+"/?$rid="+rid, 0, body)
}

// noMessage checks that c receives nothing before a round trip on its
// own connection completes: a twin GET answered in order after anything
// already queued for it.
func (c *client) noMessage(t *testing.T) {
	t.Helper()
	c.subscribe(t, 0, resFilter)
	c.publish(t, "$iothub/twin/GET/?$rid=probe", 0, "")
	m := c.next(t)
	if !strings.HasPrefix(m.Topic(), "$iothub/twin/res/200/?$rid=probe") {
		t.Fatalf("received %s %q, want nothing before the twin response", m.Topic(), m.Payload())
	}
}

// methodError is a failed call's body: IoT Hub's error object serialised
// into Message, ExceptionMessage empty.
type methodError struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	Info         map[string]string `json:"info"`
	TimestampUTC string            `json:"timestampUtc"`
	hasInfo      bool
}

func checkMethodError(t *testing.T, a methodAnswer, status int, code string, number int) methodError {
	t.Helper()
	if a.status != status || a.code != code {
		t.Fatalf("answer %d %s %s, want %d with iothub-errorcode %s", a.status, a.code, a.body, status, code)
	}
	var outer map[string]string
	if err := json.Unmarshal(a.body, &outer); err != nil || len(outer) != 2 || outer["ExceptionMessage"] != "" {
		t.Fatalf("body %s: want exactly {\"Message\": <JSON>, \"ExceptionMessage\": \"\"} (%v)", a.body, err)
	}
	var inner methodError
	if err := json.Unmarshal([]byte(outer["Message"]), &inner); err != nil {
		t.Fatalf("Message %q is not a JSON error object: %v", outer["Message"], err)
	}
	var members map[string]json.RawMessage
	_ = json.Unmarshal([]byte(outer["Message"]), &members)
	_, inner.hasInfo = members["info"]
	if inner.ErrorCode != number || inner.Message == "" {
		t.Fatalf("error %+v, want errorCode %d and a message", inner, number)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}-TimeStamp:\d\d/\d\d/\d{4} \d\d:\d\d:\d\d$`).MatchString(inner.TrackingID) {
		t.Errorf("trackingId %q, want {32 hex}-TimeStamp:MM/dd/yyyy HH:mm:ss", inner.TrackingID)
	}
	if _, err := time.Parse(time.RFC3339Nano, inner.TimestampUTC); err != nil {
		t.Errorf("timestampUtc %q: %v", inner.TimestampUTC, err)
	}
	return inner
}

// TestMethodCallRoundTrip calls a method on a module and on a device over
// both transports: JSON and empty payloads both ways, the device's status
// and payload in a 200 answer.
func TestMethodCallRoundTrip(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t)
			sub := e.em.Events().Subscribe(events.Filter{Kinds: map[events.Kind]bool{events.Method: true}}, 10)
			defer sub.Close()
			for _, id := range []identity{e.module(t, "dev", "mod"), e.device(t, "dev2")} {
				c := e.dial(t, tr, id)
				c.subscribe(t, 0, methodsFilter)

				call := e.invokeAsync(t, id, `{"methodName":"reboot","payload":{"delay": 5, "why":"test"},"responseTimeoutInSeconds":30}`)
				req := c.nextRequest(t)
				if req.name != "reboot" || string(req.payload) != `{"delay":5,"why":"test"}` {
					t.Fatalf("%s got %s %q, want reboot with the JSON payload", id.clientID(), req.name, req.payload)
				}
				c.answer(t, "201", req.rid, `{"rebooting": true}`)
				a := wait(t, call)
				if a.status != 200 || string(a.body) != `{"status":201,"payload":{"rebooting": true}}` {
					t.Fatalf("%s: answer %d %s, want 200 with the device's status and payload", id.clientID(), a.status, a.body)
				}
				select {
				case ev := <-sub.C():
					if ev.DeviceID != id.ref.DeviceID || ev.ModuleID != id.ref.ModuleID || ev.Method == nil ||
						ev.Method.Name != "reboot" || ev.Method.Status != 201 || ev.Method.Error != "" {
						t.Errorf("event %+v %+v, want reboot on %s with status 201", ev, ev.Method, id.clientID())
					}
				case <-time.After(waitFor):
					t.Fatal("no method event")
				}

				call = e.invokeAsync(t, id, `{"methodName":"ping"}`)
				req = c.nextRequest(t)
				if req.name != "ping" || string(req.payload) != "null" {
					t.Fatalf("%s got %s %q, want ping with payload null", id.clientID(), req.name, req.payload)
				}
				c.answer(t, "200", req.rid, "")
				if a := wait(t, call); a.status != 200 || string(a.body) != `{"status":200,"payload":null}` {
					t.Fatalf("%s: answer %d %s, want 200 {\"status\":200,\"payload\":null}", id.clientID(), a.status, a.body)
				}
				if ev := <-sub.C(); ev.Method.Name != "ping" {
					t.Errorf("event %+v, want ping's", ev.Method)
				}
			}
			if !regexp.MustCompile(`level=INFO msg="direct method call" component=methods method=reboot target=dev/mod duration=\S+ status=201`).MatchString(e.logs.String()) ||
				strings.Contains(e.logs.String(), "rebooting") {
				t.Errorf("want an info line per call without payloads; logs:\n%s", e.logs)
			}
		})
	}
}

// TestMethodTargetNotOnline: a target that is not connected, or connected
// without the methods subscription, fails at once with 404103 and the
// connect timeout in info.timeout.
func TestMethodTargetNotOnline(t *testing.T) {
	e := newEnv(t)
	mod := e.module(t, "dev", "mod")
	check := func(what string, a methodAnswer, timeout string) {
		t.Helper()
		got := checkMethodError(t, a, 404, "DeviceNotOnline", 404103)
		if !got.hasInfo || got.Info["timeout"] != timeout || len(got.Info) != 1 {
			t.Errorf("%s: info %v, want {\"timeout\":%q}", what, got.Info, timeout)
		}
		if !strings.Contains(got.Message, "isn't online or hasn't registered the direct method callback") {
			t.Errorf("%s: message %q", what, got.Message)
		}
	}
	check("disconnected", e.invoke(t, mod, `{"methodName":"m"}`), "00:00:00")
	check("disconnected, connect timeout 1 s", e.invoke(t, mod, `{"methodName":"m","connectTimeoutInSeconds":1}`), "00:00:01")

	c := e.dial(t, overTLS, mod)
	c.subscribe(t, 0, desiredFilter)
	check("connected, not subscribed", e.invoke(t, mod, `{"methodName":"m"}`), "00:00:00")

	c.subscribe(t, 0, methodsFilter)
	if tok := c.Unsubscribe(methodsFilter); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	check("unsubscribed", e.invoke(t, mod, `{"methodName":"m"}`), "00:00:00")
}

// TestMethodBadRequests: malformed bodies, bad names, out-of-range
// timeouts and oversize payloads get 400004 naming the field; unknown
// identities DeviceNotFound/ModuleNotFound; no ServiceConnect 401.
func TestMethodBadRequests(t *testing.T) {
	e := newEnv(t)
	mod := e.module(t, "dev", "mod")
	big := `{"methodName":"m","payload":"` + strings.Repeat("x", 128*1024) + `"}`
	for _, c := range []struct{ body, want string }{
		{`not json`, "not a JSON object"},
		{`[]`, "not a JSON object"},
		{`{"payload":{}}`, "methodName is required"},
		{`{"methodName":""}`, "methodName is required"},
		{`{"methodName":7}`, "methodName must be a string"},
		{`{"methodName":"a/b"}`, `character '/' at position 2`},
		{`{"methodName":"a b"}`, `character ' ' at position 2`},
		{`{"methodName":"m","responseTimeoutInSeconds":4}`, "responseTimeoutInSeconds must be within [5; 300]."},
		{`{"methodName":"m","responseTimeoutInSeconds":301}`, "responseTimeoutInSeconds must be within [5; 300]."},
		{`{"methodName":"m","responseTimeoutInSeconds":0}`, "responseTimeoutInSeconds must be within [5; 300]."},
		{`{"methodName":"m","responseTimeoutInSeconds":"30"}`, "responseTimeoutInSeconds must be an integer"},
		{`{"methodName":"m","responseTimeoutInSeconds":7.5}`, "responseTimeoutInSeconds must be an integer"},
		{`{"methodName":"m","connectTimeoutInSeconds":-1}`, "connectTimeoutInSeconds must be within [0; 300]."},
		{`{"methodName":"m","connectTimeoutInSeconds":1e9}`, "connectTimeoutInSeconds must be within [0; 300]."},
		{big, "at most 131072 (128 KB)"},
	} {
		a := e.invoke(t, mod, c.body)
		got := checkMethodError(t, a, 400, "ArgumentInvalid", 400004)
		if !strings.Contains(got.Message, c.want) || got.hasInfo {
			t.Errorf("body %.60s: message %q without info, want it to say %q", c.body, got.Message, c.want)
		}
	}

	missing := identity{ref: mod.ref}
	missing.ref.ModuleID = "nope"
	checkError(t, e.invoke(t, missing, `{"methodName":"m"}`), 404, "ModuleNotFound")
	missing.ref = mod.ref
	missing.ref.DeviceID, missing.ref.ModuleID = "nodev", ""
	checkError(t, e.invoke(t, missing, `{"methodName":"m"}`), 404, "DeviceNotFound")

	cs, err := e.em.PolicyConnectionString("registryRead")
	if err != nil {
		t.Fatal(err)
	}
	tok := policyToken(t, cs, e.svcHost)
	checkError(t, e.invokeAs(t, mod, `{"methodName":"m"}`, tok), 401, "IotHubUnauthorizedAccess")
}

// checkError checks an error in the registry's shape:
// {"Message":"ErrorCode:{code};…","ExceptionMessage":"Tracking ID:…"}.
func checkError(t *testing.T, a methodAnswer, status int, code string) {
	t.Helper()
	var body struct{ Message, ExceptionMessage string }
	if a.status != status || a.code != code || json.Unmarshal(a.body, &body) != nil ||
		!strings.HasPrefix(body.Message, "ErrorCode:"+code+";") {
		t.Errorf("answer %d %s %s, want %d %s", a.status, a.code, a.body, status, code)
	}
}

// TestMethodResponseTimeout: a device that never answers makes the call
// fail with 504101 after the response timeout; meanwhile twin writes and
// other calls go on, and the late answer completes nothing.
func TestMethodResponseTimeout(t *testing.T) {
	e := newEnv(t)
	mod, other := e.module(t, "dev", "slow"), e.module(t, "dev", "fast")
	c := e.dial(t, overTLS, mod)
	c.subscribe(t, 0, methodsFilter, desiredFilter)
	o := e.dial(t, overTLS, other)
	o.subscribe(t, 0, methodsFilter)

	sub := e.em.Events().Subscribe(events.Filter{Kinds: map[events.Kind]bool{events.Method: true}}, 10)
	defer sub.Close()
	slow := e.invokeAsync(t, mod, `{"methodName":"hang","responseTimeoutInSeconds":5}`)
	req := c.nextRequest(t)

	// While the call waits: a twin write reaches the same connection and
	// another module's call completes.
	e.patchDesired(t, mod, `{"during":"call"}`)
	if m := c.next(t); m.Topic() != desiredTopic(2) {
		t.Fatalf("got %s, want the desired patch", m.Topic())
	}
	fast := e.invokeAsync(t, other, `{"methodName":"quick"}`)
	r := o.nextRequest(t)
	o.answer(t, "200", r.rid, `"done"`)
	if a := wait(t, fast); a.status != 200 || string(a.body) != `{"status":200,"payload":"done"}` {
		t.Fatalf("other module's call: %d %s", a.status, a.body)
	}

	got := checkMethodError(t, wait(t, slow), 504, "GatewayTimeout", 504101)
	for ev := range sub.C() {
		if ev.Method.Name == "hang" {
			if ev.Method.Status != 504 || ev.Method.Error != "GatewayTimeout" {
				t.Errorf("event %+v, want the call's 504 GatewayTimeout", ev.Method)
			}
			break
		}
	}
	if got.Message != "Timed out waiting for the response from device." || !got.hasInfo || len(got.Info) != 0 {
		t.Errorf("error %+v, want the hub's message and info {}", got)
	}

	c.answer(t, "200", req.rid, `{"late":true}`)
	next := e.invokeAsync(t, mod, `{"methodName":"again"}`)
	r = c.nextRequest(t)
	if r.rid == req.rid {
		t.Fatalf("a new call reused $rid %s", r.rid)
	}
	c.answer(t, "202", r.rid, `{"fresh":true}`)
	if a := wait(t, next); string(a.body) != `{"status":202,"payload":{"fresh":true}}` {
		t.Fatalf("next call: %d %s, want the fresh answer, not the late one", a.status, a.body)
	}
}

// TestMethodConnectTimeoutWaitsForLateModule: with a connect timeout the
// call waits for the module to connect and subscribe, then goes through.
func TestMethodConnectTimeoutWaitsForLateModule(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			e := newEnv(t)
			mod := e.module(t, "dev", "late")
			call := e.invokeAsync(t, mod, `{"methodName":"hello","payload":[1,2],"connectTimeoutInSeconds":60}`)
			eventually(t, "the call waits for its target", func() bool {
				return strings.Contains(e.logs.String(), "direct method call waits for its target")
			})

			c := e.dial(t, tr, mod)
			c.subscribe(t, 0, methodsFilter)
			req := c.nextRequest(t)
			if req.name != "hello" || string(req.payload) != "[1,2]" {
				t.Fatalf("got %s %q", req.name, req.payload)
			}
			c.answer(t, "200", req.rid, `{"hi":1}`)
			if a := wait(t, call); a.status != 200 || string(a.body) != `{"status":200,"payload":{"hi":1}}` {
				t.Fatalf("answer %d %s", a.status, a.body)
			}
		})
	}
}

// TestMethodDisconnectMidCall: the call ends as soon as the device's
// connection does, long before its 300 s response timeout.
func TestMethodDisconnectMidCall(t *testing.T) {
	e := newEnv(t)
	mod := e.module(t, "dev", "mod")
	c := e.dial(t, overWebSocket, mod)
	c.subscribe(t, 0, methodsFilter)
	call := e.invokeAsync(t, mod, `{"methodName":"m","responseTimeoutInSeconds":300}`)
	c.nextRequest(t)
	c.Disconnect(0)

	select {
	case a := <-call:
		got := checkMethodError(t, a, 404, "DeviceConnectionClosedRemotely", 404104)
		if got.Message != "Device unavailable" {
			t.Errorf("message %q", got.Message)
		}
	case <-time.After(waitFor):
		t.Fatal("the call went on after its target disconnected")
	}

	// A session takeover ends the old connection's calls too.
	c = e.dial(t, overTLS, mod)
	c.subscribe(t, 0, methodsFilter)
	call = e.invokeAsync(t, mod, `{"methodName":"m","responseTimeoutInSeconds":300}`)
	c.nextRequest(t)
	c2 := e.dial(t, overTLS, mod)
	checkMethodError(t, wait(t, call), 404, "DeviceConnectionClosedRemotely", 404104)
	c2.subscribe(t, 0, methodsFilter)
	call = e.invokeAsync(t, mod, `{"methodName":"after"}`)
	req := c2.nextRequest(t)
	c2.answer(t, "200", req.rid, "1")
	if a := wait(t, call); string(a.body) != `{"status":200,"payload":1}` {
		t.Fatalf("after takeover: %d %s", a.status, a.body)
	}
}

// TestMethodModulesAnswerOnlyTheirOwnCalls: two modules of one device get
// identical topics and $rid sequences; each sees only its calls, and one
// module's answer never completes the other's call.
func TestMethodModulesAnswerOnlyTheirOwnCalls(t *testing.T) {
	e := newEnv(t)
	m1, m2 := e.module(t, "dev", "m1"), e.module(t, "dev", "m2")
	c1, c2 := e.dial(t, overTLS, m1), e.dial(t, overTLS, m2)
	c1.subscribe(t, 0, methodsFilter)
	c2.subscribe(t, 0, methodsFilter)

	call1 := e.invokeAsync(t, m1, `{"methodName":"who","payload":"m1"}`)
	r1 := c1.nextRequest(t)
	// The same $rid from the other module, acknowledged (QoS 1) so that it
	// is handled before m2 has a call of its own.
	c2.publish(t, "$iothub/methods/res/500/?$rid="+r1.rid, 1, `"forged by m2"`)
	call2 := e.invokeAsync(t, m2, `{"methodName":"who","payload":"m2"}`)
	r2 := c2.nextRequest(t)
	if string(r2.payload) != `"m2"` {
		t.Fatalf("m2 received %q, want its own call", r2.payload)
	}
	c1.answer(t, "200", r1.rid, `"from m1"`)
	c2.answer(t, "200", r2.rid, `"from m2"`)
	if a := wait(t, call1); string(a.body) != `{"status":200,"payload":"from m1"}` {
		t.Errorf("m1's call: %d %s", a.status, a.body)
	}
	if a := wait(t, call2); string(a.body) != `{"status":200,"payload":"from m2"}` {
		t.Errorf("m2's call: %d %s", a.status, a.body)
	}
	c1.noMessage(t)
	c2.noMessage(t)

	// The device itself is another identity: not online.
	dev := identity{ref: m1.ref}
	dev.ref.ModuleID = ""
	checkMethodError(t, e.invoke(t, dev, `{"methodName":"who"}`), 404, "DeviceNotOnline", 404103)
}

// TestMethodOddAnswers: an unknown $rid, a duplicate answer and a status
// that is not an integer complete nothing and keep the connection; a body
// that is not JSON is passed on verbatim, as IoT Hub does.
func TestMethodOddAnswers(t *testing.T) {
	e := newEnv(t)
	mod := e.module(t, "dev", "mod")
	c := e.dial(t, overTLS, mod)
	c.subscribe(t, 0, methodsFilter)

	c.answer(t, "200", "999", `{}`) // never issued
	call := e.invokeAsync(t, mod, `{"methodName":"m"}`)
	req := c.nextRequest(t)
	c.answer(t, "abc", req.rid, `{"bad":"status"}`)
	c.answer(t, "2.5", req.rid, `{"bad":"status"}`)
	c.answer(t, "200", req.rid, `{"first":true}`)
	c.answer(t, "200", req.rid, `{"second":true}`)
	if a := wait(t, call); string(a.body) != `{"status":200,"payload":{"first":true}}` {
		t.Fatalf("answer %d %s, want the first well-formed answer", a.status, a.body)
	}

	call = e.invokeAsync(t, mod, `{"methodName":"m"}`)
	req = c.nextRequest(t)
	c.answer(t, "-3", req.rid, `not json`)
	if a := wait(t, call); a.status != 200 || string(a.body) != `{"status":-3,"payload":not json}` {
		t.Fatalf("answer %d %s, want the device's body verbatim", a.status, a.body)
	}
	if !c.IsConnectionOpen() {
		t.Fatal("the gateway closed the connection")
	}
	for _, want := range []string{
		`msg="dropped direct method response" component=mqtt identity=dev/mod reason=".*\\"abc\\"`,
		`msg="dropped direct method response: no call with this \$rid is in flight on this connection" component=mqtt identity=dev/mod rid=999`,
	} {
		if !regexp.MustCompile(want).MatchString(e.logs.String()) {
			t.Errorf("logs lack %s:\n%s", want, e.logs)
		}
	}
}

// TestMethodManyConcurrentCalls: 100 calls in flight to one module at
// once, answered in reverse order, each matched to its caller by $rid.
func TestMethodManyConcurrentCalls(t *testing.T) {
	e := newEnv(t)
	mod := e.module(t, "dev", "mod")
	c := e.dial(t, overTLS, mod)
	c.subscribe(t, 0, methodsFilter)

	const n = 100
	calls := make([]<-chan methodAnswer, n)
	for i := range calls {
		calls[i] = e.invokeAsync(t, mod, fmt.Sprintf(`{"methodName":"echo","payload":{"n":%d}}`, i))
	}
	reqs := make([]methodRequest, n)
	for i := range reqs {
		reqs[i] = c.nextRequest(t)
	}
	for i := n - 1; i >= 0; i-- {
		c.answer(t, "200", reqs[i].rid, string(reqs[i].payload))
	}
	for i, ch := range calls {
		want := fmt.Sprintf(`{"status":200,"payload":{"n":%d}}`, i)
		if a := wait(t, ch); string(a.body) != want {
			t.Errorf("call %d: %d %s, want %s", i, a.status, a.body, want)
		}
	}
}

// TestMethodInFlightBound: calls beyond the per-connection bound fail at
// once with 429 instead of queueing without limit.
func TestMethodInFlightBound(t *testing.T) {
	e := newEnv(t)
	mod := e.module(t, "dev", "mod")
	var mu sync.Mutex
	received := 0
	opts := dialOpts{password: e.token(t, mod, time.Hour)}
	c := e.newClient(t, overTLS, mod.clientID(), opts)
	if rc := c.connect(t); rc != 0 {
		t.Fatalf("CONNACK %d", rc)
	}
	tok := c.Subscribe(methodsFilter, 0, func(paho.Client, paho.Message) {
		mu.Lock()
		received++
		mu.Unlock()
	})
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	const bound = 512
	calls := make([]<-chan methodAnswer, bound)
	for i := range calls {
		calls[i] = e.invokeAsync(t, mod, `{"methodName":"m","responseTimeoutInSeconds":300}`)
	}
	eventually(t, "all calls reach the module", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received == bound
	})
	got := checkMethodError(t, e.invoke(t, mod, `{"methodName":"m"}`), 429, "ThrottlingException", 429001)
	if !strings.Contains(got.Message, "at most 512") {
		t.Errorf("message %q", got.Message)
	}
	c.Disconnect(0)
	for _, ch := range calls {
		if a := wait(t, ch); a.status != 404 || !bytes.Contains(a.body, []byte("404104")) {
			t.Fatalf("pending call ended with %d %s, want 404104", a.status, a.body)
		}
	}
}

// policyToken signs a service token with the policy of connection string cs.
func policyToken(t *testing.T, cs, host string) string {
	t.Helper()
	p, err := connstr.Parse(cs)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sas.NewSigner(p.SharedAccessKeyName, p.SharedAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.Token(sas.ServiceResource(host), time.Hour)
	return tok
}
