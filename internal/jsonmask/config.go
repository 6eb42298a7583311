package jsonmask

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
)

// Strategy says how a matched value (or a detected substring) is rewritten.
type Strategy uint8

// The strategies of SPEC section 6.
const (
	StrategyMask    Strategy = iota // "[REDACTED]"
	StrategyPartial                 // a***@acme.test, +* (***) ***-1234, A***
	StrategyHash                    // "tok_" + 16 hex of HMAC-SHA256
	StrategyNull                    // null
	StrategyRemove                  // drop the member or array element
)

var strategyNames = [...]string{"mask", "partial", "hash", "null", "remove"}

// String returns the configuration name of s.
func (s Strategy) String() string {
	if int(s) < len(strategyNames) {
		return strategyNames[s]
	}
	return fmt.Sprintf("Strategy(%d)", uint8(s))
}

// ParseStrategy maps a configuration word to a Strategy; "" is mask.
func ParseStrategy(name string) (Strategy, error) {
	if name == "" {
		return StrategyMask, nil
	}
	for i, n := range strategyNames {
		if n == name {
			return Strategy(i), nil
		}
	}
	return 0, fmt.Errorf("jsonmask: unknown strategy %q (want mask, partial, hash, null or remove)", name)
}

// Mode selects the framing of the byte stream given to a Stream.
type Mode uint8

const (
	// ModeJSON is exactly one JSON value, with optional surrounding whitespace.
	ModeJSON Mode = iota
	// ModeNDJSON is newline-delimited JSON (application/x-ndjson,
	// application/jsonl): every line holds one value or only whitespace.
	// A value may not span lines.
	ModeNDJSON
	// ModeJSONSeq is an RFC 7464 JSON text sequence (application/json-seq):
	// every record starts with RS (0x1E); empty records are allowed.
	ModeJSONSeq
)

// Defaults of the bounds in Options.
const (
	DefaultMaxDepth      = 1000
	DefaultMaxValueBytes = 64 << 10
	maxPatternLen        = 64  // normalised bytes of a field name or path segment
	maxPositions         = 256 // NFA positions over all paths (nfaSet width)
)

// Options is the user-facing configuration; Compile turns it into a Config.
type Options struct {
	// Preset is "pii" (also when empty) or "none".
	Preset string
	// Fields are extra member names, matched at any depth after
	// normalisation. A leading "*" makes a suffix match ("*_token").
	Fields []string
	// Paths select values by position: $ (root), .name, ["name"], .*,
	// [*] (any element), [N] (element N, from 0), ** or .. (any depth, zero
	// levels included). Names are normalised like Fields.
	Paths []string
	// Keep paths are never masked, nor is anything inside them; they beat
	// Fields, Paths, the preset and the detectors.
	Keep []string
	// Detect lists substring detectors run on every unmasked string,
	// member names included: "email", "phone".
	Detect []string
	// Strategy is mask (also when empty), partial, hash, null or remove.
	Strategy string
	// HashKey is the HMAC-SHA256 key of strategy hash; required for it.
	HashKey []byte
	// MaxDepth bounds nesting (DefaultMaxDepth when 0); deeper input is invalid.
	MaxDepth int
	// MaxValueBytes bounds the bytes held for one string that detectors
	// must see whole, and for one member name in remove mode
	// (DefaultMaxValueBytes when 0). A longer string is replaced whole.
	MaxValueBytes int
}

// Config is a compiled, immutable masking policy. It is safe for
// concurrent use; every response gets its own Stream.
type Config struct {
	strategy   Strategy
	names      *nameMatcher // nil when no field names at all
	paths      *pathNFA     // nil when no Paths and no Keep
	detEmail   bool
	detPhone   bool
	detect     bool
	hashKey    []byte
	maxDepth   int
	maxValue   int
	remove     bool
	presetName string
	fastPath   bool   // fast() applies: no paths, no detectors, mask or null
	fastRepl   string // what fast() writes for a masked scalar
}

// Preset pii (SPEC section 6): suffixes and exact normalised names.
var (
	piiSuffixes = []string{"email", "emails", "emailaddress", "phone", "phones",
		"phonenumber", "phonenumbers", "mobile", "mobilenumber", "telephone", "cellphone"}
	piiExact = []string{"name", "names", "firstname", "lastname", "fullname",
		"givenname", "familyname", "middlename", "displayname", "surname",
		"preferredname", "legalname"}
)

// Compile validates o and builds a reusable Config.
func Compile(o Options) (*Config, error) {
	c := &Config{maxDepth: o.MaxDepth, maxValue: o.MaxValueBytes}
	st, err := ParseStrategy(o.Strategy)
	if err != nil {
		return nil, err
	}
	c.strategy = st
	c.remove = st == StrategyRemove
	if st == StrategyHash {
		if len(o.HashKey) == 0 {
			return nil, errors.New("jsonmask: strategy hash needs a non-empty hash key")
		}
		c.hashKey = append([]byte(nil), o.HashKey...)
	}
	if c.maxDepth == 0 {
		c.maxDepth = DefaultMaxDepth
	}
	if c.maxDepth < 1 {
		return nil, errors.New("jsonmask: MaxDepth must be positive")
	}
	if c.maxValue == 0 {
		c.maxValue = DefaultMaxValueBytes
	}
	if c.maxValue < 512 {
		return nil, errors.New("jsonmask: MaxValueBytes must be at least 512")
	}

	var nb nameBuilder
	switch o.Preset {
	case "", "pii":
		c.presetName = "pii"
		for _, s := range piiSuffixes {
			nb.add(s, true)
		}
		for _, s := range piiExact {
			nb.add(s, false)
		}
	case "none":
		c.presetName = "none"
	default:
		return nil, fmt.Errorf("jsonmask: unknown preset %q (want pii or none)", o.Preset)
	}
	for _, f := range o.Fields {
		suffix := strings.HasPrefix(f, "*")
		n := normalizeString(strings.TrimPrefix(f, "*"))
		if n == "" {
			return nil, fmt.Errorf("jsonmask: field %q is empty after normalisation", f)
		}
		if len(n) > maxPatternLen {
			return nil, fmt.Errorf("jsonmask: field %q is longer than %d bytes after normalisation", f, maxPatternLen)
		}
		if strings.ContainsRune(n, '*') {
			return nil, fmt.Errorf("jsonmask: field %q: only a leading * is supported", f)
		}
		nb.add(n, suffix)
	}
	total := 0
	for _, p := range nb.pats {
		total += len(p)
	}
	if total >= hitBit-2 {
		return nil, errors.New("jsonmask: too many field names")
	}
	c.names = nb.build()

	if len(o.Paths) > 0 || len(o.Keep) > 0 {
		p, err := compilePaths(o.Paths, o.Keep)
		if err != nil {
			return nil, err
		}
		c.paths = p
	}
	for _, d := range o.Detect {
		switch strings.ToLower(d) {
		case "email":
			c.detEmail = true
		case "phone":
			c.detPhone = true
		default:
			return nil, fmt.Errorf("jsonmask: unknown detector %q (want email or phone)", d)
		}
	}
	c.detect = c.detEmail || c.detPhone
	c.fastPath = c.paths == nil && !c.detect && (st == StrategyMask || st == StrategyNull)
	c.fastRepl = `"[REDACTED]"`
	if st == StrategyNull {
		c.fastRepl = "null"
	}
	return c, nil
}

// MustCompile is Compile that panics on error, for tests and fixed policies.
func MustCompile(o Options) *Config {
	c, err := Compile(o)
	if err != nil {
		panic(err)
	}
	return c
}

// Strategy reports the compiled strategy.
func (c *Config) Strategy() Strategy { return c.strategy }

// hmacToken appends "tok_" + 16 hex chars of HMAC-SHA256(key, v), using
// the stream's reusable hash. Used by tests as a reference too.
func hashToken(key, v []byte) string {
	h := hmac.New(sha256.New, key)
	h.Write(v)
	sum := h.Sum(nil)
	const hx = "0123456789abcdef"
	b := []byte("tok_")
	for _, x := range sum[:8] {
		b = append(b, hx[x>>4], hx[x&15])
	}
	return string(b)
}
