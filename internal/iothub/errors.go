package iothub

// ErrorCode is an IoT Hub error code name with its number; the HTTP status
// is the number's first three digits.
type ErrorCode struct {
	Name   string
	Number int
}

// Status returns the HTTP status of the code.
func (c ErrorCode) Status() int { return c.Number / 1000 }

// Error codes used by the registry, twin and direct method APIs.
var (
	ArgumentInvalid                           = ErrorCode{"ArgumentInvalid", 400004}
	ArgumentNull                              = ErrorCode{"ArgumentNull", 400005}
	IotHubFormatError                         = ErrorCode{"IotHubFormatError", 400006}
	ConnectionForcefullyClosedOnNewConnection = ErrorCode{"ConnectionForcefullyClosedOnNewConnection", 400027}
	IotHubUnauthorizedAccess                  = ErrorCode{"IotHubUnauthorizedAccess", 401002}
	IotHubUnauthorized                        = ErrorCode{"IotHubUnauthorized", 401003}
	DeviceNotFound                            = ErrorCode{"DeviceNotFound", 404001}
	ModuleNotFound                            = ErrorCode{"ModuleNotFound", 404010}
	NotFound                                  = ErrorCode{"NotFound", 404000}
	DeviceNotOnline                           = ErrorCode{"DeviceNotOnline", 404103}
	DeviceConnectionClosedRemotely            = ErrorCode{"DeviceConnectionClosedRemotely", 404104}
	MethodNotAllowed                          = ErrorCode{"MethodNotAllowed", 405000}
	DeviceAlreadyExists                       = ErrorCode{"DeviceAlreadyExists", 409001}
	ModuleAlreadyExistsOnDevice               = ErrorCode{"ModuleAlreadyExistsOnDevice", 409301}
	PreconditionFailed                        = ErrorCode{"PreconditionFailed", 412001}
	MessageTooLarge                           = ErrorCode{"MessageTooLarge", 413001}
	TooManyDevices                            = ErrorCode{"TooManyDevices", 413002}
	TooManyModulesOnDevice                    = ErrorCode{"TooManyModulesOnDevice", 413003}
	ThrottlingException                       = ErrorCode{"ThrottlingException", 429001}
	ThrottlingBacklogTimeout                  = ErrorCode{"ThrottlingBacklogTimeout", 429003}
	ServerError                               = ErrorCode{"ServerError", 500001}
	ServiceUnavailable                        = ErrorCode{"ServiceUnavailable", 503001}
	GatewayTimeout                            = ErrorCode{"GatewayTimeout", 504101}
)

var codesByName = map[string]ErrorCode{}

func init() {
	for _, c := range []ErrorCode{
		ArgumentInvalid, ArgumentNull, IotHubFormatError, ConnectionForcefullyClosedOnNewConnection,
		IotHubUnauthorizedAccess, IotHubUnauthorized, DeviceNotFound, ModuleNotFound, NotFound,
		MethodNotAllowed, DeviceAlreadyExists, ModuleAlreadyExistsOnDevice, PreconditionFailed,
		MessageTooLarge, TooManyDevices, TooManyModulesOnDevice, ThrottlingException,
		ThrottlingBacklogTimeout, ServerError, ServiceUnavailable,
		DeviceNotOnline, DeviceConnectionClosedRemotely, GatewayTimeout,
	} {
		codesByName[c.Name] = c
	}
}

// LookupErrorCode returns the code with the given name.
func LookupErrorCode(name string) (ErrorCode, bool) {
	c, ok := codesByName[name]
	return c, ok
}

// LookupErrorNumber returns the code with the given number.
func LookupErrorNumber(n int) (ErrorCode, bool) {
	for _, c := range codesByName {
		if c.Number == n {
			return c, true
		}
	}
	return ErrorCode{}, false
}
