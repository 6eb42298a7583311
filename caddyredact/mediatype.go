package caddyredact

import (
	"strings"

	"github.com/scopegate/scopegate/internal/jsonmask"
)

// mediaType returns the lower-case type/subtype of a Content-Type value,
// without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// isJSONFamily reports whether a media type is one redact masks.
func isJSONFamily(mt string) bool {
	_, ok := jsonMode(mt)
	return ok
}

// jsonMode maps a media type to the masker's framing.
func jsonMode(mt string) (jsonmask.Mode, bool) {
	switch {
	case mt == "application/json":
		return jsonmask.ModeJSON, true
	case mt == "application/x-ndjson", mt == "application/jsonl":
		return jsonmask.ModeNDJSON, true
	case mt == "application/json-seq":
		return jsonmask.ModeJSONSeq, true
	case strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return jsonmask.ModeJSON, true
	}
	return 0, false
}

// passes reports whether a media type is listed in pass_types.
func (h *Redact) passes(mt string) bool {
	for _, p := range h.passTypes {
		if p == mt || (strings.HasSuffix(p, "/") && strings.HasPrefix(mt, p)) {
			return true
		}
	}
	return false
}
