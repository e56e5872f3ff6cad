package iothub

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"
)

// IdentityETag renders a device or module identity's etag: base64 of the
// ASCII decimal of its counter ("MTU0MDQ2NTQw" is 154046540).
func IdentityETag(n int64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(n, 10)))
}

// ParseIdentityETag reads the counter back out of an identity etag.
func ParseIdentityETag(etag string) (int64, bool) {
	b, err := base64.StdEncoding.DecodeString(etag)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// TwinETag renders a twin's etag: base64 of its counter as an 8-byte
// big-endian integer (a new twin's "AAAAAAAAAAE=" is 1).
func TwinETag(n int64) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, uint64(n)))
}
