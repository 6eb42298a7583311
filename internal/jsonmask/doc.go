// Package jsonmask masks personal data in JSON as it streams through, in one
// pass and with bounded memory. It is the engine of the redact handler
// (SPEC section 6) and knows nothing about HTTP.
//
// # Use
//
// Compile an Options into a Config once; it is immutable and safe for
// concurrent use. Give every body its own Stream (or reuse one through
// Reset, e.g. from a sync.Pool):
//
//	cfg, err := jsonmask.Compile(jsonmask.Options{Detect: []string{"email"}})
//	s := cfg.NewStreamMode(w, jsonmask.ModeNDJSON)
//	_, err = s.Write(chunk) // any number of times, split anywhere
//	err = s.Close()         // fails on truncated or invalid input
//	n := s.Stats().Fields   // for {http.redact.fields}
//
// Config.Copy and Stream.ReadFrom are the pull-style forms.
//
// # Design
//
// A resumable byte-wise state machine validates RFC 8259 JSON and tracks
// the nesting; fast paths take whole tokens (ASCII strings via an 8-bytes-
// at-a-time scan, numbers, literals) when they lie inside the current
// write. For the common policy (no paths, no detectors, mask or null) one
// loop (fast.go) walks names, values, brackets and commas inside
// containers with its state in locals, and hands anything unusual back to
// the state machine in exactly the state it would have reached, so both
// give the same bytes at every split. Untouched input is copied as spans, so numbers,
// escapes and white space come out byte for byte; only values under matched
// members are rewritten. Each decision is prefix-decidable: a member name
// (decoded, normalised, matched by a reversed trie) or a path step (an NFA
// whose state set is kept per open container) decides the value's fate
// before its first byte. A masked value's bytes are never in a span:
// "mask" and "null" write the replacement when the value starts, "hash" and
// "partial" when it ends, so input cut off anywhere leaks nothing.
// Detectors and "remove" need to see a whole string or member first; those
// bytes are held in bounded buffers, never written early.
//
// Memory per Stream is a 32 KiB output buffer, the nesting stack and, with
// detectors, partial or remove, buffers bounded by Options.MaxValueBytes.
// A reused Stream allocates nothing per document.
//
// # Decisions (where the SPEC is silent)
//
//   - Input must be valid UTF-8 (RFC 8259 section 8.1); invalid bytes are an
//     error. Escaped lone surrogates ("\ud800") are valid JSON and accepted;
//     they decode to U+FFFD for matching, detection and hashing.
//   - A UTF-8 byte order mark at the very start is accepted and dropped, so
//     the output is plain JSON.
//   - Errors report an input offset and never quote input bytes.
//   - Nesting deeper than MaxDepth (1000) is an error.
//   - Names are normalised as the SPEC says and, to fail closed, Unicode
//     white space and format characters (zero-width space, soft hyphen) are
//     dropped too. Full-width letters and homoglyphs do not fold (simple case
//     folding only): detectors are the backstop.
//   - mask turns strings, numbers and booleans into "[REDACTED]" (a number
//     becomes a string); null stays null and is not counted. Containers keep
//     their keys and have every scalar masked.
//   - partial never shows a boolean (its first character is its value):
//     "***". A one-character value or local part is hidden entirely.
//   - hash tokens cover the decoded string, a number's JSON text, or
//     "true"/"false".
//   - remove drops the member or array element, commas fixed up. A matched
//     container is dropped whole unless a keep path may match inside it; then
//     it stays and only its non-kept scalars are dropped. The root value
//     cannot be removed: it becomes null.
//   - keep protects the value at the path and everything inside it, from
//     fields, paths and detectors alike.
//   - Detectors run on decoded text of every string that is not masked or
//     kept, member names included. With null a string holding a detection
//     becomes null (a member name is masked as with mask); with remove the
//     string's member or element is dropped, and so is a member whose name
//     holds one. Detection is heuristic (see detect.go); numbers are not
//     scanned.
//   - Fail closed on size: a string longer than MaxValueBytes that detectors
//     would need to see whole is replaced whole; in remove mode a member
//     whose name and surrounding white space exceed MaxValueBytes+1 KiB is
//     dropped. These rules depend only on lengths, never on how the input
//     was split.
//   - NDJSON is strict: one value per line, blank lines allowed, CRLF
//     accepted, a value spanning lines is an error. JSON text sequences need
//     RS before every record; empty records are allowed.
//   - Stats.Fields counts masked scalars, removed members or elements, and
//     detected substrings.
package jsonmask
