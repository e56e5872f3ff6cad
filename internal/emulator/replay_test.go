package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// recording is a session record of real hub traffic.
type recording struct {
	Entries []struct {
		RequestURI      string            `json:"RequestUri"`
		RequestMethod   string            `json:"RequestMethod"`
		RequestHeaders  map[string]any    `json:"RequestHeaders"`
		RequestBody     json.RawMessage   `json:"RequestBody"`
		StatusCode      int               `json:"StatusCode"`
		ResponseHeaders map[string]string `json:"ResponseHeaders"`
		ResponseBody    json.RawMessage   `json:"ResponseBody"`
	} `json:"Entries"`
}

var (
	trackingRE = regexp.MustCompile(`^Tracking ID:[0-9a-f]{32}(-G:\d+)?-TimeStamp:\d\d/\d\d/\d{4} \d\d:\d\d:\d\d$`)
	setTimeRE  = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$`)
	digitsRE   = regexp.MustCompile(`^\d+$`)
)

// TestReplayRecordings sends the requests of real hub sessions to the
// emulator and compares statuses, headers and response bodies.
func TestReplayRecordings(t *testing.T) {
	files, err := filepath.Glob("../../testdata/recordings/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("found %d recordings; want 3", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var rec recording
			if err := json.Unmarshal(raw, &rec); err != nil {
				t.Fatal(err)
			}
			e := startInMemory(t)
			c := newClient(t, e)
			r := replayer{
				etags: map[string]string{},
				keys:  map[string][2]string{},
			}
			for i, en := range rec.Entries {
				u, err := url.Parse(en.RequestURI)
				if err != nil {
					t.Fatal(err)
				}
				var body io.Reader
				if len(en.RequestBody) > 0 && string(en.RequestBody) != "null" {
					body = bytes.NewReader(r.substitute(t, u.Path, en.RequestBody))
				}
				req, err := http.NewRequest(en.RequestMethod, "https://"+e.HTTPSAddr()+u.RequestURI(), body)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", c.token(t, "iothubowner"))
				for _, h := range []string{"Content-Type", "If-Match", "Accept"} {
					if v, ok := en.RequestHeaders[h].(string); ok {
						req.Header.Set(h, r.mapETags(v))
					}
				}
				resp, err := c.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				step := en.RequestMethod + " " + u.Path
				if resp.StatusCode != en.StatusCode {
					t.Fatalf("entry %d %s: status %d %s; recorded %d", i, step, resp.StatusCode, got, en.StatusCode)
				}
				for _, h := range []string{"Content-Type", "iothub-errorcode"} {
					if want, ok := en.ResponseHeaders[h]; ok && resp.Header.Get(h) != want {
						t.Errorf("entry %d %s: %s = %q; recorded %q", i, step, h, resp.Header.Get(h), want)
					}
				}
				_, recordedETag := en.ResponseHeaders["ETag"]
				if hasETag := resp.Header.Get("ETag") != ""; hasETag != recordedETag {
					t.Errorf("entry %d %s: ETag header present = %v; recorded %v", i, step, hasETag, recordedETag)
				}
				if resp.Header.Get("x-ms-request-id") == "" {
					t.Errorf("entry %d %s: no x-ms-request-id", i, step)
				}
				if len(en.ResponseBody) == 0 || string(en.ResponseBody) == "null" || string(en.ResponseBody) == "[]" && len(got) == 0 {
					if len(got) != 0 {
						t.Errorf("entry %d %s: body %s; recorded none", i, step, got)
					}
					continue
				}
				r.learn(t, u.Path, en.ResponseBody, got)
				want := normalize(t, en.ResponseBody, strings.HasPrefix(u.Path, "/twins/"))
				have := normalize(t, got, strings.HasPrefix(u.Path, "/twins/"))
				if diff := cmp.Diff(want, have); diff != "" {
					t.Errorf("entry %d %s: body (-recorded +emulator):\n%s", i, step, diff)
				}
			}
		})
	}
}

// replayer maps what differs between the recorded hub and the emulator:
// identity etags and the (sanitized) keys.
type replayer struct {
	etags map[string]string    // recorded identity etag → emulator's
	keys  map[string][2]string // identity path → emulator's keys
}

func (r *replayer) mapETags(v string) string {
	for rec, ours := range r.etags {
		v = strings.ReplaceAll(v, rec, ours)
	}
	return v
}

// substitute fills the keys the recording sanitized with the emulator's
// keys of that identity.
func (r *replayer) substitute(t *testing.T, path string, body []byte) []byte {
	t.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		t.Fatal(err)
	}
	s := r.mapETags(compact.String())
	if k, ok := r.keys[path]; ok {
		s = strings.Replace(s, `"primaryKey":"Sanitized"`, `"primaryKey":"`+k[0]+`"`, 1)
		s = strings.Replace(s, `"secondaryKey":"Sanitized"`, `"secondaryKey":"`+k[1]+`"`, 1)
	}
	if strings.Contains(s, "Sanitized") {
		t.Fatalf("request body still has a sanitized value: %s", s)
	}
	return []byte(s)
}

func (r *replayer) learn(t *testing.T, path string, recorded, got []byte) {
	t.Helper()
	var rec, ours map[string]any
	if json.Unmarshal(recorded, &rec) != nil || json.Unmarshal(got, &ours) != nil {
		return
	}
	if strings.HasPrefix(path, "/devices/") {
		if a, ok := rec["etag"].(string); ok {
			r.etags[a], _ = ours["etag"].(string)
		}
		if k, ok := ours["authentication"].(map[string]any)["symmetricKey"].(map[string]any); ok {
			r.keys[path] = [2]string{k["primaryKey"].(string), k["secondaryKey"].(string)}
		}
	}
}

// normalize decodes a body and replaces what legitimately differs between
// two hubs: keys, identity etags, generation ids, tracking ids and
// timestamps of writes. Never-set timestamps and twin etags are compared
// as they are. Values of the wrong form are left alone so that they show
// in the diff.
func normalize(t *testing.T, body []byte, twin bool) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	var walk func(key string, v any) any
	walk = func(key string, v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = walk(k, e)
			}
			return x
		case []any:
			for i, e := range x {
				x[i] = walk(key, e)
			}
			return x
		case string:
			switch {
			case key == "primaryKey" || key == "secondaryKey":
				return "<key>"
			case key == "deviceEtag" || (key == "etag" && !twin):
				return "<identity etag>"
			case key == "generationId" && digitsRE.MatchString(x):
				return "<generation id>"
			case key == "ExceptionMessage" && trackingRE.MatchString(x):
				return "<tracking id>"
			case setTimeRE.MatchString(x):
				return "<time>"
			}
		}
		return v
	}
	return walk("", v)
}
