package registry

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// recorded is one exchange of a real hub session.
type recorded struct {
	RequestURI      string            `json:"RequestUri"`
	RequestMethod   string            `json:"RequestMethod"`
	RequestBody     json.RawMessage   `json:"RequestBody"`
	StatusCode      int               `json:"StatusCode"`
	ResponseHeaders map[string]string `json:"ResponseHeaders"`
	ResponseBody    json.RawMessage   `json:"ResponseBody"`
}

// TestRecordedSessions makes the client's calls of each recorded real-hub
// session against the bytes that hub answered, and checks what the client
// returns: the models as the hub sent them, and its errors by code.
func TestRecordedSessions(t *testing.T) {
	files, err := filepath.Glob("../../testdata/recordings/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var rec struct{ Entries []recorded }
			if err := json.Unmarshal(raw, &rec); err != nil {
				t.Fatal(err)
			}
			var answers []canned
			for _, e := range rec.Entries {
				answers = append(answers, canned{status: e.StatusCode, header: e.ResponseHeaders["iothub-errorcode"], body: string(e.ResponseBody)})
			}
			c := cannedClient(t, answers...)
			putModules := 0
			for i, e := range rec.Entries {
				u, err := url.Parse(e.RequestURI)
				if err != nil {
					t.Fatal(err)
				}
				seg := strings.Split(strings.Trim(u.Path, "/"), "/")
				got, want, err := replayCall(t, c, e, seg, &putModules)
				if e.StatusCode >= 300 {
					re := asResponseError(t, err)
					if re.StatusCode != e.StatusCode || re.Code != e.ResponseHeaders["iothub-errorcode"] || re.Message == "" || re.TrackingID == "" {
						t.Errorf("entry %d: error %+v, want the recorded %d with its code, message and tracking ID", i, re, e.StatusCode)
					}
					continue
				}
				if err != nil {
					t.Fatalf("entry %d (%s %s): %v", i, e.RequestMethod, u.Path, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("entry %d (%s %s): returned model differs from the hub's answer (-hub +client):\n%s", i, e.RequestMethod, u.Path, diff)
				}
			}
		})
	}
}

// replayCall makes the client call that sends e's request and returns what
// it returned and what the recorded answer decodes to.
func replayCall(t *testing.T, c *Client, e recorded, seg []string, putModules *int) (got, want any, err error) {
	t.Helper()
	ctx := context.Background()
	decode := func(v any) any {
		if err := json.Unmarshal(e.ResponseBody, v); err != nil {
			t.Fatalf("recorded answer: %v", err)
		}
		return v
	}
	switch {
	case e.RequestMethod == "PUT" && len(seg) == 2:
		d, err := c.CreateDevice(ctx, iothub.Device{DeviceID: seg[1]})
		return &d, decode(&iothub.Device{}), err
	case e.RequestMethod == "PUT" && len(seg) == 4:
		var req iothub.Module
		if err := json.Unmarshal(e.RequestBody, &req); err != nil {
			t.Fatal(err)
		}
		var m iothub.Module
		if *putModules++; *putModules == 1 {
			m, err = c.CreateModule(ctx, req)
		} else {
			m, err = c.UpdateModule(ctx, req, "*")
		}
		return &m, decode(&iothub.Module{}), err
	case e.RequestMethod == "GET" && seg[0] == "devices":
		m, err := c.GetModule(ctx, seg[1], seg[3])
		return &m, decode(&iothub.Module{}), err
	case e.RequestMethod == "GET" && seg[0] == "twins":
		tw, err := c.GetModuleTwin(ctx, seg[1], seg[3])
		return &tw, decode(&iothub.Twin{}), err
	case e.RequestMethod == "PATCH":
		var req iothub.Twin
		if err := json.Unmarshal(e.RequestBody, &req); err != nil {
			t.Fatal(err)
		}
		tw, err := c.UpdateModuleTwin(ctx, seg[1], seg[3], req, req.ETag)
		if e.StatusCode >= 300 {
			return nil, nil, err
		}
		return &tw, decode(&iothub.Twin{}), err
	case e.RequestMethod == "DELETE":
		return nil, nil, c.DeleteDevice(ctx, seg[1], "*")
	}
	t.Fatalf("no client call sends %s %v", e.RequestMethod, seg)
	return nil, nil, nil
}
