package registry

import (
	"context"
	"net/http"

	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// GetDeviceTwin reads a device twin.
func (c *Client) GetDeviceTwin(ctx context.Context, deviceID string) (iothub.Twin, error) {
	return c.twin(ctx, http.MethodGet, deviceID, "", false, nil, "")
}

// UpdateDeviceTwin merges patch (tags and desired properties; null removes a
// member) into a device twin if its etag still matches ("" means any).
func (c *Client) UpdateDeviceTwin(ctx context.Context, deviceID string, patch iothub.Twin, etag string) (iothub.Twin, error) {
	return c.twin(ctx, http.MethodPatch, deviceID, "", false, &patch, etag)
}

// ReplaceDeviceTwin replaces a device twin's tags and desired properties.
func (c *Client) ReplaceDeviceTwin(ctx context.Context, deviceID string, twin iothub.Twin, etag string) (iothub.Twin, error) {
	return c.twin(ctx, http.MethodPut, deviceID, "", false, &twin, etag)
}

// GetModuleTwin reads a module twin.
func (c *Client) GetModuleTwin(ctx context.Context, deviceID, moduleID string) (iothub.Twin, error) {
	return c.twin(ctx, http.MethodGet, deviceID, moduleID, true, nil, "")
}

// UpdateModuleTwin merges patch into a module twin if its etag still
// matches ("" means any).
func (c *Client) UpdateModuleTwin(ctx context.Context, deviceID, moduleID string, patch iothub.Twin, etag string) (iothub.Twin, error) {
	return c.twin(ctx, http.MethodPatch, deviceID, moduleID, true, &patch, etag)
}

// ReplaceModuleTwin replaces a module twin's tags and desired properties.
func (c *Client) ReplaceModuleTwin(ctx context.Context, deviceID, moduleID string, twin iothub.Twin, etag string) (iothub.Twin, error) {
	return c.twin(ctx, http.MethodPut, deviceID, moduleID, true, &twin, etag)
}

// twin runs a twin operation on /twins/{d} or /twins/{d}/modules/{m}.
func (c *Client) twin(ctx context.Context, method, deviceID, moduleID string, withModule bool, body *iothub.Twin, etag string) (iothub.Twin, error) {
	if err := validIDs(deviceID, moduleID, withModule); err != nil {
		return iothub.Twin{}, err
	}
	path := []string{"twins", deviceID}
	if withModule {
		path = append(path, "modules", moduleID)
	}
	k := call{method: method, path: path, ok: okGet}
	if body != nil {
		k.body = body
		k.ifMatch = ifMatch(etag)
	}
	var out iothub.Twin
	k.out = &out
	err := c.do(ctx, k)
	return out, err
}
