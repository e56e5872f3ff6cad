package twinclient

import "encoding/json"

// WritableAck builds the reported-properties patch that acknowledges ev
// under IoT Plug and Play's convention for writable properties: for each
// desired member, {"value": <desired value>, "ac": 200, "av": <$version>}.
// It returns nil when ev has no members.
func WritableAck(ev Event) []byte {
	if len(ev.Desired) == 0 {
		return nil
	}
	type ack struct {
		Value json.RawMessage `json:"value"`
		AC    int             `json:"ac"`
		AV    int64           `json:"av"`
	}
	doc := make(map[string]ack, len(ev.Desired))
	for k, v := range ev.Desired {
		doc[k] = ack{Value: v, AC: 200, AV: ev.Version}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil // values came from parsed JSON, so they marshal
	}
	return b
}
