package connstr

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const key = "c2VjcmV0IGtleSBmb3IgdGVzdHMgb25seSEhIQ==" // "secret key for tests only!!!"

func TestParseShapes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want ConnectionString
		kind Kind
	}{{
		name: "service",
		in:   "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + key,
		want: ConnectionString{HostName: "myhub.azure-devices.net", SharedAccessKeyName: "iothubowner", SharedAccessKey: key},
		kind: Service,
	}, {
		name: "device",
		in:   "HostName=myhub.azure-devices.net;DeviceId=myFirstDevice;SharedAccessKey=" + key,
		want: ConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "myFirstDevice", SharedAccessKey: key},
		kind: Device,
	}, {
		name: "module",
		in:   "HostName=myhub.azure-devices.net;DeviceId=myFirstDevice;ModuleId=myFirstModule;SharedAccessKey=" + key,
		want: ConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "myFirstDevice", ModuleID: "myFirstModule", SharedAccessKey: key},
		kind: Module,
	}, {
		name: "module through an Edge gateway",
		in:   "HostName=myhub.azure-devices.net;DeviceId=d;ModuleId=m;SharedAccessKey=" + key + ";GatewayHostName=edge.local",
		want: ConnectionString{HostName: "myhub.azure-devices.net", DeviceID: "d", ModuleID: "m", SharedAccessKey: key, GatewayHostName: "edge.local"},
		kind: Module,
	}, {
		name: "x509 device, any case",
		in:   "HostName=h.azure-devices.net;DeviceId=d;X509=True",
		want: ConnectionString{HostName: "h.azure-devices.net", DeviceID: "d", X509: true},
		kind: Device,
	}, {
		name: "member order, trailing separator, surrounding space",
		in:   "  SharedAccessKey=" + key + ";SharedAccessKeyName=service;HostName=localhost:8443;\n",
		want: ConnectionString{HostName: "localhost:8443", SharedAccessKeyName: "service", SharedAccessKey: key},
		kind: Service,
	}, {
		name: "IP literals",
		in:   "HostName=[::1]:8443;DeviceId=d;SharedAccessKey=" + key,
		want: ConnectionString{HostName: "[::1]:8443", DeviceID: "d", SharedAccessKey: key},
		kind: Device,
	}, {
		name: "IDs keep their special characters",
		in:   "HostName=127.0.0.1;DeviceId=a#b?c%d;ModuleId=m=1;SharedAccessKey=" + key,
		want: ConnectionString{HostName: "127.0.0.1", DeviceID: "a#b?c%d", ModuleID: "m=1", SharedAccessKey: key},
		kind: Module,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			if got.Kind() != tt.kind {
				t.Errorf("Kind() = %v, want %v", got.Kind(), tt.kind)
			}
			again, err := Parse(got.Format())
			if err != nil {
				t.Fatalf("Parse(Format()): %v", err)
			}
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("Format does not round-trip (-first +second):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     Error
	}{
		{"empty", "  ", Error{Reason: "empty"}},
		{"no equals", "HostName=h;oops", Error{Reason: "member 2 is not of the form Name=value"}},
		{"empty member", "HostName=h;;DeviceId=d", Error{Reason: "member 2 is not of the form Name=value"}},
		{"empty name", "=v;HostName=h", Error{Reason: "member 1 is not of the form Name=value"}},
		{"unknown field", "HostName=h;Endpoint=sb://x", Error{Field: "Endpoint", Reason: "unknown field (allowed: HostName, SharedAccessKeyName, SharedAccessKey, DeviceId, ModuleId, GatewayHostName, x509)"}},
		{"unknown long name is not echoed", "HostName=h;" + key, Error{Reason: "member 2: unknown field (allowed: HostName, SharedAccessKeyName, SharedAccessKey, DeviceId, ModuleId, GatewayHostName, x509)"}},
		{"field names are case-sensitive", "hostname=h", Error{Field: "hostname", Reason: "unknown field (allowed: HostName, SharedAccessKeyName, SharedAccessKey, DeviceId, ModuleId, GatewayHostName, x509)"}},
		{"duplicate", "HostName=h;HostName=g;SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "HostName", Reason: "duplicate field"}},
		{"duplicate x509 in another case", "HostName=h;DeviceId=d;x509=true;X509=true", Error{Field: "x509", Reason: "duplicate field"}},
		{"empty value", "HostName=h;DeviceId=;SharedAccessKey=" + key, Error{Field: "DeviceId", Reason: "empty value"}},
		{"missing host", "SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "HostName", Reason: "missing"}},
		{"bad host character", "HostName=my_hub.net;SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "HostName", Reason: "character '_' at position 3 is not allowed (allowed: letters, digits, '-', '.')"}},
		{"bad port", "HostName=h:0;SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "HostName", Reason: "port is not a number from 1 to 65535"}},
		{"port too large", "HostName=h:65536;SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "HostName", Reason: "port is not a number from 1 to 65535"}},
		{"empty port", "HostName=h:;SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "HostName", Reason: "port is not a number from 1 to 65535"}},
		{"empty host with port", "HostName=:443;SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "HostName", Reason: "empty host name"}},
		{"bad gateway", "HostName=h;DeviceId=d;SharedAccessKey=" + key + ";GatewayHostName=a b", Error{Field: "GatewayHostName", Reason: "character ' ' at position 2 is not allowed (allowed: letters, digits, '-', '.')"}},
		{"module without device", "HostName=h;ModuleId=m;SharedAccessKey=" + key, Error{Field: "DeviceId", Reason: "missing (required with ModuleId)"}},
		{"policy and device", "HostName=h;DeviceId=d;SharedAccessKeyName=p;SharedAccessKey=" + key, Error{Field: "SharedAccessKeyName", Reason: "not allowed with DeviceId (a connection string is either a policy's or an identity's)"}},
		{"neither policy nor device", "HostName=h;SharedAccessKey=" + key, Error{Reason: "missing SharedAccessKeyName (service) or DeviceId (device or module)"}},
		{"x509 on a policy", "HostName=h;SharedAccessKeyName=p;x509=true", Error{Field: "x509", Reason: "only allowed with DeviceId"}},
		{"x509 with a key", "HostName=h;DeviceId=d;x509=true;SharedAccessKey=" + key, Error{Field: "SharedAccessKey", Reason: "not allowed with x509=true"}},
		{"x509 not a bool", "HostName=h;DeviceId=d;x509=yes", Error{Field: "x509", Reason: "must be true or false"}},
		{"missing key", "HostName=h;DeviceId=d", Error{Field: "SharedAccessKey", Reason: "missing"}},
		{"x509=false needs a key", "HostName=h;DeviceId=d;x509=false", Error{Field: "SharedAccessKey", Reason: "missing"}},
		{"key not base64", "HostName=h;DeviceId=d;SharedAccessKey=not-base64!", Error{Field: "SharedAccessKey", Reason: "not valid base64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %+v, %v; want an *Error", tt.in, got, err)
			}
			if diff := cmp.Diff(tt.want, *pe); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(ConnectionString{}, got); diff != "" {
				t.Errorf("Parse returned a value with its error:\n%s", diff)
			}
		})
	}
}

func TestErrorsNeverShowTheKey(t *testing.T) {
	// Separators gone wrong pull the key into another member's value.
	for _, in := range []string{
		"HostName=h.net,SharedAccessKey=" + key + ";SharedAccessKeyName=p",
		"HostName=h.net:SharedAccessKey=" + key + ";SharedAccessKeyName=p",
		"HostName=h.net;GatewayHostName=SharedAccessKey=" + key + ";DeviceId=d",
		"HostName=h.net;x509=" + key + ";DeviceId=d",
		"HostName=h.net;DeviceId=d;SharedAccessKey=" + key + "!",
		key,
	} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", in)
			continue
		}
		if strings.Contains(err.Error(), key[:12]) {
			t.Errorf("Parse error %q shows the key", err)
		}
	}
}

func TestError(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{Reason: "empty"}, "connection string: empty"},
		{Error{Field: "HostName", Reason: "missing"}, "connection string: HostName: missing"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestHostAndPort(t *testing.T) {
	tests := []struct {
		hostName, host, port string
	}{
		{"myhub.azure-devices.net", "myhub.azure-devices.net", ""},
		{"localhost:8443", "localhost", "8443"},
		{"127.0.0.1:443", "127.0.0.1", "443"},
		{"[::1]:8443", "::1", "8443"},
		{"::1", "::1", ""},
	}
	for _, tt := range tests {
		c := ConnectionString{HostName: tt.hostName}
		if got := c.Host(); got != tt.host {
			t.Errorf("Host() of %q = %q, want %q", tt.hostName, got, tt.host)
		}
		if got := c.Port(); got != tt.port {
			t.Errorf("Port() of %q = %q, want %q", tt.hostName, got, tt.port)
		}
	}
}

func TestKey(t *testing.T) {
	k, err := ConnectionString{SharedAccessKey: key}.Key()
	if err != nil || string(k) != "secret key for tests only!!!" {
		t.Errorf("Key() = %q, %v", k, err)
	}
	_, err = ConnectionString{SharedAccessKey: "%%%"}.Key()
	var pe *Error
	if !errors.As(err, &pe) || pe.Field != FieldSharedAccessKey {
		t.Errorf("Key() of bad base64: %v, want a SharedAccessKey *Error", err)
	}
}

func TestFormatAndRedaction(t *testing.T) {
	tests := []struct {
		cs              ConnectionString
		format, printed string
	}{{
		cs:      ConnectionString{HostName: "h.net", SharedAccessKeyName: "iothubowner", SharedAccessKey: key},
		format:  "HostName=h.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + key,
		printed: "HostName=h.net;SharedAccessKeyName=iothubowner;SharedAccessKey=***",
	}, {
		cs:      ConnectionString{HostName: "h.net", DeviceID: "d", ModuleID: "m", SharedAccessKey: key, GatewayHostName: "gw"},
		format:  "HostName=h.net;DeviceId=d;ModuleId=m;SharedAccessKey=" + key + ";GatewayHostName=gw",
		printed: "HostName=h.net;DeviceId=d;ModuleId=m;SharedAccessKey=***;GatewayHostName=gw",
	}, {
		cs:      ConnectionString{HostName: "h.net", DeviceID: "d", X509: true},
		format:  "HostName=h.net;DeviceId=d;x509=true",
		printed: "HostName=h.net;DeviceId=d;x509=true",
	}}
	for _, tt := range tests {
		if got := tt.cs.Format(); got != tt.format {
			t.Errorf("Format() = %q, want %q", got, tt.format)
		}
		if got := tt.cs.String(); got != tt.printed {
			t.Errorf("String() = %q, want %q", got, tt.printed)
		}
		if got := fmt.Sprintf("%v|%s|%+v", tt.cs, tt.cs, tt.cs); strings.Contains(got, key) {
			t.Errorf("fmt shows the key: %s", got)
		}
		var b strings.Builder
		slog.New(slog.NewTextHandler(&b, nil)).Info("connecting", "cs", tt.cs)
		if strings.Contains(b.String(), key) || !strings.Contains(b.String(), "HostName=h.net") {
			t.Errorf("slog output %q shows the key or lacks the host", b.String())
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Service: "service", Device: "device", Module: "module", 0: "unknown"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// FuzzParse checks that whatever Parse accepts formats back to itself,
// prints without its key, and that no error shows a key.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + key,
		"HostName=localhost:8443;DeviceId=d;ModuleId=m;SharedAccessKey=" + key + ";GatewayHostName=g",
		"HostName=[::1]:1;DeviceId=d;x509=true",
		"HostName=h,SharedAccessKey=" + key + ";SharedAccessKeyName=p",
		"HostName=h;;",
		"=;=",
		// As read from a file: a trailing newline, CRLF, a byte order mark.
		"HostName=h;DeviceId=d;SharedAccessKey=" + key + "\n",
		"HostName=h;DeviceId=d;SharedAccessKey=" + key + "\r\n",
		"\ufeffHostName=h;SharedAccessKeyName=p;SharedAccessKey=" + key,
		// IDs with characters that mean something in URLs and paths.
		"HostName=h;DeviceId=x%41;ModuleId=m+1;SharedAccessKey=" + key,
		"HostName=h;DeviceId=a#b?c;ModuleId=!(),:=@$'*;SharedAccessKey=" + key,
		"HostName=h;DeviceId=.;ModuleId=..;SharedAccessKey=" + key,
		"HostName=h;DeviceId=a/b;SharedAccessKey=" + key,
		// Hosts: an IP address, a port out of range, a scheme, spaces.
		"HostName=127.0.0.1:8443;SharedAccessKeyName=p;SharedAccessKey=" + key,
		"HostName=h:99999;SharedAccessKeyName=p;SharedAccessKey=" + key,
		"HostName=https://h/;SharedAccessKeyName=p;SharedAccessKey=" + key,
		" HostName = h ; SharedAccessKeyName = p ; SharedAccessKey = " + key,
		// Repeated fields, empty values, keys that are not base64.
		"HostName=h;HostName=g;SharedAccessKeyName=p;SharedAccessKey=" + key,
		"HostName=;SharedAccessKeyName=;SharedAccessKey=",
		"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + key + "%",
		"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + key + "==",
		"HostName=h;DeviceId=d;SharedAccessKey=" + key + ";SharedAccessSignature=SharedAccessSignature sr=h&sig=s&se=1",
		"hostname=h;deviceid=d;sharedaccesskey=" + key,
		"HostName=h\x00;DeviceId=d\xff;SharedAccessKey=" + key,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := Parse(s)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error %T is not an *Error", s, err)
			}
			for _, k := range keyValues(s) {
				if len(k) >= 8 && strings.Contains(err.Error(), k) && !strings.Contains(strings.ReplaceAll(s, FieldSharedAccessKey+"="+k, FieldSharedAccessKey+"="), k) {
					t.Fatalf("Parse(%q) error %q shows key %q", s, err, k)
				}
			}
			return
		}
		if err := cs.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted what Validate refuses: %v", s, err)
		}
		again, err := Parse(cs.Format())
		if err != nil {
			t.Fatalf("Parse(Format()) of %q: %v", s, err)
		}
		if again != cs {
			t.Fatalf("round trip of %q: %+v != %+v", s, again, cs)
		}
		if cs.SharedAccessKey != "" && strings.Contains(cs.String(), FieldSharedAccessKey+"="+cs.SharedAccessKey) {
			t.Fatalf("String() of %q shows the key", s)
		}
	})
}

// keyValues returns what follows each "SharedAccessKey=" in s, up to ';'.
func keyValues(s string) []string {
	var out []string
	for {
		i := strings.Index(s, FieldSharedAccessKey+"=")
		if i < 0 {
			return out
		}
		s = s[i+len(FieldSharedAccessKey)+1:]
		v, _, _ := strings.Cut(s, ";")
		out = append(out, v)
	}
}
