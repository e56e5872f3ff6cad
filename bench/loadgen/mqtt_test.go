package loadgen

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/moduletwin/iothub-module-twin/internal/iothub/topics"
)

func TestRemainingLengthRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152} {
		p := appendRemainingLength([]byte{pktPuback << 4}, n)
		p = append(p, make([]byte, n)...)
		b0, body, err := readPacket(bufio.NewReader(bytes.NewReader(p)))
		if err != nil {
			t.Fatalf("length %d: %v", n, err)
		}
		if b0 != pktPuback<<4 || len(body) != n {
			t.Errorf("length %d: read type byte %#x and %d body bytes", n, b0, len(body))
		}
	}
}

func TestConnectPacket(t *testing.T) {
	p := connectPacket("d/m", "host/d/m/?api-version=x", "pw", 60)
	_, body, err := readPacket(bufio.NewReader(bytes.NewReader(p)))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xc0, 0, 60, 0, 3, 'd', '/', 'm'}
	if !bytes.HasPrefix(body, want) {
		t.Errorf("CONNECT body starts % x, want % x", body[:len(want)], want)
	}
	if !bytes.HasSuffix(body, []byte{0, 2, 'p', 'w'}) {
		t.Errorf("CONNECT body ends % x, want the password last", body[len(body)-4:])
	}
}

func TestHandlePublishAcknowledgesQoS1(t *testing.T) {
	var sent bytes.Buffer
	c := &ModuleConn{nc: fakeConn{&sent}}
	topic := topics.DesiredPatch(7)
	body := append(appendString(nil, topic), 0x12, 0x34)
	body = append(body, `{"a":1,"$version":7}`...)
	var got Patch
	if err := c.handlePublish(body, pktPublish<<4|2, func(p Patch) { got = p }); err != nil {
		t.Fatal(err)
	}
	if got.Version != 7 || string(got.Body) != `{"a":1,"$version":7}` {
		t.Errorf("patch = version %d body %q", got.Version, got.Body)
	}
	if want := []byte{pktPuback << 4, 2, 0x12, 0x34}; !bytes.Equal(sent.Bytes(), want) {
		t.Errorf("sent % x, want PUBACK % x", sent.Bytes(), want)
	}
}

func TestHandlePublishAnswersMethods(t *testing.T) {
	var sent bytes.Buffer
	c := &ModuleConn{nc: fakeConn{&sent}, answer: true}
	body := append(appendString(nil, topics.MethodRequest("echo", "42")), `{"n":1}`...)
	if err := c.handlePublish(body, pktPublish<<4, nil); err != nil {
		t.Fatal(err)
	}
	if want := publishPacket("$iothub/methods/res/200/?$rid=42", []byte(`{"n":1}`)); !bytes.Equal(sent.Bytes(), want) {
		t.Errorf("sent % x, want the answer % x", sent.Bytes(), want)
	}
}
