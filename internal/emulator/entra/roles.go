package entra

import (
	"fmt"
	"sort"
	"strings"
)

// Data actions of IoT Hub's service API, as Azure RBAC names them.
const (
	ActionDevicesRead    = "Microsoft.Devices/IotHubs/devices/read"
	ActionDevicesWrite   = "Microsoft.Devices/IotHubs/devices/write"
	ActionDevicesDelete  = "Microsoft.Devices/IotHubs/devices/delete"
	ActionTwinsRead      = "Microsoft.Devices/IotHubs/twins/read"
	ActionTwinsWrite     = "Microsoft.Devices/IotHubs/twins/write"
	ActionMethodsInvoke  = "Microsoft.Devices/IotHubs/directMethods/invoke/action"
	ActionStatisticsRead = "Microsoft.Devices/IotHubs/statistics/read"
	ActionJobsRead       = "Microsoft.Devices/IotHubs/jobs/read"
	ActionJobsWrite      = "Microsoft.Devices/IotHubs/jobs/write"

	ActionConfigurationsRead   = "Microsoft.Devices/IotHubs/configurations/read"
	ActionConfigurationsWrite  = "Microsoft.Devices/IotHubs/configurations/write"
	ActionConfigurationsDelete = "Microsoft.Devices/IotHubs/configurations/delete"
	ActionConfigurationsApply  = "Microsoft.Devices/IotHubs/configurations/applyToEdgeDevice/action"
)

// Role is an Azure built-in role for IoT Hub's data plane: its name, its
// role definition ID and the data actions it grants (patterns with '*').
type Role struct {
	Name        string
	ID          string
	DataActions []string
}

// BuiltInRoles are the roles Azure defines for IoT Hub's service API, with
// the data actions of their published role definitions.
var BuiltInRoles = []Role{
	{"IoT Hub Data Contributor", "4fc6c259-987e-4a07-842e-c321cc9d413f", []string{"Microsoft.Devices/IotHubs/*"}},
	{"IoT Hub Data Reader", "b447c946-2db7-41ec-983d-d8bf3b1c77e3", []string{"Microsoft.Devices/IotHubs/*/read", "Microsoft.Devices/IotHubs/fileUpload/notifications/action"}},
	{"IoT Hub Registry Contributor", "4ea46cd5-c1b2-4a8e-910b-273211f9ce47", []string{"Microsoft.Devices/IotHubs/devices/*"}},
	{"IoT Hub Twin Contributor", "494bdba2-168f-4f31-a0a1-191d2f7c028c", []string{"Microsoft.Devices/IotHubs/twins/*"}},
}

// LookupRole finds a built-in role by name or role definition ID, ignoring
// case, as az role assignment create does.
func LookupRole(s string) (Role, bool) {
	s = strings.TrimSpace(s)
	for _, r := range BuiltInRoles {
		if strings.EqualFold(s, r.Name) || strings.EqualFold(s, r.ID) {
			return r, true
		}
	}
	return Role{}, false
}

// RoleNames lists the built-in roles' names, for messages.
func RoleNames() string {
	names := make([]string, len(BuiltInRoles))
	for i, r := range BuiltInRoles {
		names[i] = fmt.Sprintf("%q", r.Name)
	}
	return strings.Join(names, ", ")
}

// CanonicalRoles checks role names and returns them as Azure spells them,
// sorted and without duplicates.
func CanonicalRoles(in []string) ([]string, error) {
	seen := map[string]bool{}
	out := []string{}
	for _, s := range in {
		r, ok := LookupRole(s)
		if !ok {
			return nil, fmt.Errorf("unknown role %q (built-in IoT Hub roles: %s)", s, RoleNames())
		}
		if !seen[r.Name] {
			seen[r.Name] = true
			out = append(out, r.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Grants reports whether any of the named roles grants action.
func Grants(roles []string, action string) bool {
	for _, name := range roles {
		r, ok := LookupRole(name)
		if !ok {
			continue
		}
		for _, pattern := range r.DataActions {
			if matchAction(pattern, action) {
				return true
			}
		}
	}
	return false
}

// matchAction matches an RBAC action pattern, where '*' stands for any
// run of characters ('/' included), ignoring case as Azure does.
func matchAction(pattern, action string) bool {
	pattern, action = strings.ToLower(pattern), strings.ToLower(action)
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == action
	}
	if !strings.HasPrefix(action, parts[0]) {
		return false
	}
	rest := action[len(parts[0]):]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return strings.HasSuffix(rest, parts[len(parts)-1])
}
