package iothub

import "testing"

// The codes as the troubleshooting guide lists them: name, number, status.
var documentedCodes = []struct {
	name   string
	number int
	status int
}{
	{"ArgumentInvalid", 400004, 400},
	{"ArgumentNull", 400005, 400},
	{"IotHubFormatError", 400006, 400},
	{"ConnectionForcefullyClosedOnNewConnection", 400027, 400},
	{"IotHubUnauthorizedAccess", 401002, 401},
	{"IotHubUnauthorized", 401003, 401},
	{"NotFound", 404000, 404},
	{"DeviceNotFound", 404001, 404},
	{"ModuleNotFound", 404010, 404},
	{"DeviceNotOnline", 404103, 404},
	{"DeviceConnectionClosedRemotely", 404104, 404},
	{"MethodNotAllowed", 405000, 405},
	{"DeviceAlreadyExists", 409001, 409},
	{"ModuleAlreadyExistsOnDevice", 409301, 409},
	{"PreconditionFailed", 412001, 412},
	{"MessageTooLarge", 413001, 413},
	{"TooManyDevices", 413002, 413},
	{"TooManyModulesOnDevice", 413003, 413},
	{"ThrottlingException", 429001, 429},
	{"ThrottlingBacklogTimeout", 429003, 429},
	{"ServerError", 500001, 500},
	{"ServiceUnavailable", 503001, 503},
	{"GatewayTimeout", 504101, 504},
}

func TestLookupErrorCode(t *testing.T) {
	for _, d := range documentedCodes {
		c, ok := LookupErrorCode(d.name)
		if !ok {
			t.Errorf("LookupErrorCode(%q) found nothing", d.name)
			continue
		}
		if c.Number != d.number || c.Status() != d.status {
			t.Errorf("LookupErrorCode(%q) = %d (status %d), want %d (status %d)", d.name, c.Number, c.Status(), d.number, d.status)
		}
		byNumber, ok := LookupErrorNumber(d.number)
		if !ok || byNumber.Name != d.name {
			t.Errorf("LookupErrorNumber(%d) = %q, %v; want %q", d.number, byNumber.Name, ok, d.name)
		}
	}
}

func TestLookupUnknown(t *testing.T) {
	for _, name := range []string{"", "deviceNotFound", "DeviceMessageLockLost", "Unknown"} {
		if c, ok := LookupErrorCode(name); ok {
			t.Errorf("LookupErrorCode(%q) = %+v, want not found", name, c)
		}
	}
	for _, n := range []int{0, 404, 412002, 999999} {
		if c, ok := LookupErrorNumber(n); ok {
			t.Errorf("LookupErrorNumber(%d) = %+v, want not found", n, c)
		}
	}
}

func TestNamedCodeVariables(t *testing.T) {
	// The exported variables agree with the table the lookups use.
	for _, c := range []ErrorCode{DeviceNotFound, ModuleNotFound, DeviceAlreadyExists, ModuleAlreadyExistsOnDevice, PreconditionFailed, IotHubUnauthorizedAccess, ThrottlingException} {
		got, ok := LookupErrorCode(c.Name)
		if !ok || got != c {
			t.Errorf("LookupErrorCode(%q) = %+v, %v; want %+v", c.Name, got, ok, c)
		}
	}
}
