package keyring

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
)

// Store is where scoped_auth finds keys. The handler does not know which
// store it talks to.
type Store interface {
	// Lookup returns the key with this id, or nil and no error when there is
	// none. An error means the store could not answer (the handler answers
	// 503, never allows).
	Lookup(ctx context.Context, id string) (*Key, error)
	// LookupPrincipal returns the certificate principal matched by a
	// verified chain (leaf first), or nil and no error when there is none.
	LookupPrincipal(ctx context.Context, chain []*x509.Certificate) (*Key, error)
}

// ErrUnavailable wraps store failures.
var ErrUnavailable = errors.New("key store unavailable")

// Set is an immutable, indexed set of keys: what the file store swaps
// atomically, and what a test can use as a store directly.
type Set struct {
	byID       map[string]*Key
	principals map[string][]*Key // PinKey → principals filed under it
	denied     *Denylist         // swapped with the keys, never apart
	Warnings   []string
}

// NewSet compiles records into a set. Duplicate ids are an error.
func NewSet(records []*Record) (*Set, error) {
	s := &Set{byID: make(map[string]*Key, len(records)), principals: map[string][]*Key{}}
	for i, r := range records {
		if r == nil {
			return nil, fmt.Errorf("keys[%d]: null is not a key record", i)
		}
		k, err := Compile(r)
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		if _, dup := s.byID[k.ID]; dup {
			return nil, fmt.Errorf("keys[%d]: duplicate id %s", i, k.ID)
		}
		s.byID[k.ID] = k
		if k.IsPrincipal() {
			for _, pin := range k.IndexPins() {
				pk := PinKey(pin)
				s.principals[pk] = append(s.principals[pk], k)
			}
		}
		s.Warnings = append(s.Warnings, r.Warnings()...)
	}
	return s, nil
}

// Denylist implements DenylistSource. A set always has one (empty when
// its file names none): nil would mean "not loaded".
func (s *Set) Denylist() *Denylist {
	if s == nil || s.denied == nil {
		return emptyDenylist
	}
	return s.denied
}

// Len is the number of keys in the set.
func (s *Set) Len() int { return len(s.byID) }

// Lookup implements Store.
func (s *Set) Lookup(_ context.Context, id string) (*Key, error) { return s.byID[id], nil }

// LookupPrincipal implements Store: the first principal, by pin strength
// (leaf, SPKI, URI, subject) and then file order, whose whole binding
// (issuer pin included) matches the chain.
func (s *Set) LookupPrincipal(_ context.Context, chain []*x509.Certificate) (*Key, error) {
	if len(chain) == 0 || len(s.principals) == 0 {
		return nil, nil
	}
	for _, pin := range PrincipalPins(chain[0]) {
		for _, k := range s.principals[PinKey(pin)] {
			if k.binding.Matches(chain) {
				return k, nil
			}
		}
	}
	return nil, nil
}
