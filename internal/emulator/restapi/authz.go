package restapi

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/emulator/entra"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/hub"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// dataActions maps each operation ("METHOD pattern") to the Azure RBAC data
// action a Microsoft Entra ID caller needs for it, as IoT Hub documents
// them. An operation missing here is refused to Entra ID callers.
var dataActions = map[string]string{
	"GET /devices":                       entra.ActionDevicesRead,
	"GET /devices/{$}":                   entra.ActionDevicesRead,
	"GET /devices/{id}":                  entra.ActionDevicesRead,
	"PUT /devices/{id}":                  entra.ActionDevicesWrite,
	"DELETE /devices/{id}":               entra.ActionDevicesDelete,
	"GET /devices/{id}/modules":          entra.ActionDevicesRead,
	"GET /devices/{id}/modules/{mid}":    entra.ActionDevicesRead,
	"PUT /devices/{id}/modules/{mid}":    entra.ActionDevicesWrite,
	"DELETE /devices/{id}/modules/{mid}": entra.ActionDevicesDelete,
	"GET /twins/{id}":                    entra.ActionTwinsRead,
	"PATCH /twins/{id}":                  entra.ActionTwinsWrite,
	"PUT /twins/{id}":                    entra.ActionTwinsWrite,
	"GET /twins/{id}/modules/{mid}":      entra.ActionTwinsRead,
	"PATCH /twins/{id}/modules/{mid}":    entra.ActionTwinsWrite,
	"PUT /twins/{id}/modules/{mid}":      entra.ActionTwinsWrite,
	// Queries read twins; the other operations have actions of their own.
	"POST /devices/query":                        entra.ActionTwinsRead,
	"POST /twins/{id}/methods":                   entra.ActionMethodsInvoke,
	"POST /twins/{id}/modules/{mid}/methods":     entra.ActionMethodsInvoke,
	"GET /statistics/devices":                    entra.ActionStatisticsRead,
	"GET /statistics/service":                    entra.ActionStatisticsRead,
	"GET /jobs/v2/query":                         entra.ActionJobsRead,
	"GET /jobs/v2/{id}":                          entra.ActionJobsRead,
	"PUT /jobs/v2/{id}":                          entra.ActionJobsWrite,
	"POST /jobs/v2/{id}/cancel":                  entra.ActionJobsWrite,
	"GET /digitaltwins/{id}":                     entra.ActionTwinsRead,
	"PATCH /digitaltwins/{id}":                   entra.ActionTwinsWrite,
	"POST /digitaltwins/{id}/commands/{command}": entra.ActionMethodsInvoke,
	"POST /digitaltwins/{id}/components/{component}/commands/{command}": entra.ActionMethodsInvoke,
	"GET /configurations":                          entra.ActionConfigurationsRead,
	"GET /configurations/{id}":                     entra.ActionConfigurationsRead,
	"PUT /configurations/{id}":                     entra.ActionConfigurationsWrite,
	"DELETE /configurations/{id}":                  entra.ActionConfigurationsDelete,
	"POST /devices/{id}/applyConfigurationContent": entra.ActionConfigurationsApply,
}

// authorize checks a service API request's Authorization header: a
// Microsoft Entra ID bearer token whose principal has the operation's data
// action, or (unless local authentication is disabled) a shared access
// signature of a policy with the rights the operation needs.
func (a *api) authorize(r *http.Request, pattern string, op operation) error {
	header := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if a.disableLocalAuth {
			return &hub.Error{Code: iothub.IotHubUnauthorizedAccess,
				Message: "local authentication is disabled on this hub: shared access signatures are refused on the service API; use a Microsoft Entra ID bearer token"}
		}
		if op.anyOf {
			return a.hub.AuthorizeServiceAny(header, op.need, a.now())
		}
		return a.hub.AuthorizeService(header, op.need, a.now())
	}
	if a.entra == nil {
		return &hub.Error{Code: iothub.IotHubUnauthorizedAccess, Message: "this hub accepts no Microsoft Entra ID tokens"}
	}
	caller, err := a.entra.Authenticate(strings.TrimSpace(token))
	if err != nil {
		return &hub.Error{Code: iothub.IotHubUnauthorizedAccess, Message: err.Error()}
	}
	if _, path, ok := strings.Cut(pattern, " "); ok {
		pattern = path // the pattern names its method
	}
	action := dataActions[r.Method+" "+pattern]
	if action == "" || !caller.Allows(action) {
		return &hub.Error{Code: iothub.IotHubUnauthorized,
			Message: fmt.Sprintf("Principal %s is not authorized for %s on %s due to no assigned permissions", caller.ObjectID, r.Method, r.URL.EscapedPath())}
	}
	return nil
}
