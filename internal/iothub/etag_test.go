package iothub

import "testing"

// The values are a real hub's (IOTHUB-PROTOCOL.md §4).
func TestETags(t *testing.T) {
	if got := IdentityETag(154046540); got != "MTU0MDQ2NTQw" {
		t.Errorf("IdentityETag(154046540) = %q, want MTU0MDQ2NTQw", got)
	}
	if n, ok := ParseIdentityETag("MTU0MDQ2NTQx"); !ok || n != 154046541 {
		t.Errorf("ParseIdentityETag(MTU0MDQ2NTQx) = %d, %v; want 154046541, true", n, ok)
	}
	for _, bad := range []string{"", "not base64!", "eA=="} { // "eA==" is "x"
		if n, ok := ParseIdentityETag(bad); ok {
			t.Errorf("ParseIdentityETag(%q) = %d, true; want false", bad, n)
		}
	}
	for n, want := range map[int64]string{1: "AAAAAAAAAAE=", 2: "AAAAAAAAAAI=", 258: "AAAAAAAAAQI="} {
		if got := TwinETag(n); got != want {
			t.Errorf("TwinETag(%d) = %q, want %q", n, got, want)
		}
	}
}
