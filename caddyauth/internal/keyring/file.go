package keyring

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// File is the keys file: {"keys": [record, …], "denied_certs": [entry, …]}.
type File struct {
	Keys []*Record `json:"keys"`
	// DeniedCerts is the client-certificate denylist, loaded and swapped
	// together with the keys: a bad entry makes a bad file.
	DeniedCerts []*DeniedCert `json:"denied_certs,omitempty"`
}

// ParseFile decodes and validates a keys file strictly. The error names what
// is wrong; the caller adds the file name.
func ParseFile(data []byte) (*File, *Set, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, errors.New(`empty file: want {"keys": [...]}`)
		}
		return nil, nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("unexpected data after the top-level object")
	}
	if f.Keys == nil {
		return nil, nil, errors.New(`missing "keys" array`)
	}
	set, err := NewSet(f.Keys)
	if err != nil {
		return nil, nil, err
	}
	denied, err := NewDenylist(f.DeniedCerts)
	if err != nil {
		return nil, nil, err
	}
	set.denied = denied
	return &f, set, nil
}

// LoadFile reads and parses a keys file.
func LoadFile(path string) (*File, *Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	f, set, err := ParseFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	return f, set, nil
}

// FileStore serves keys from a keys file, re-read when it changes. Lookups
// read an atomically swapped immutable Set: no lock on the request path.
type FileStore struct {
	path string
	set  atomic.Pointer[Set]
	stat fileStamp

	// OnReload is called after a changed file was loaded.
	OnReload func(*Set)
	// OnError is called each time a changed or failing file could not be
	// loaded; the last good set stays in force.
	OnError func(error)
}

type fileStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
}

// OpenFileStore loads path; an error here must stop Caddy's start.
func OpenFileStore(path string) (*FileStore, error) {
	st, err := stampOf(path)
	if err != nil {
		return nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	_, set, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	fs := &FileStore{path: path, stat: st}
	fs.set.Store(set)
	return fs, nil
}

// Current returns the set in force.
func (fs *FileStore) Current() *Set { return fs.set.Load() }

// Lookup implements Store.
func (fs *FileStore) Lookup(ctx context.Context, id string) (*Key, error) {
	return fs.set.Load().Lookup(ctx, id)
}

// Denylist implements DenylistSource: the denylist of the set in force.
func (fs *FileStore) Denylist() *Denylist { return fs.set.Load().Denylist() }

// LookupPrincipal implements Store.
func (fs *FileStore) LookupPrincipal(ctx context.Context, chain []*x509.Certificate) (*Key, error) {
	return fs.set.Load().LookupPrincipal(ctx, chain)
}

// Watch polls the file every interval until ctx is done, and swaps in a new
// set when the file changed and is valid. While the file is unreadable or
// invalid it retries on every tick, reporting each failure to OnError.
func (fs *FileStore) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := stampOf(fs.path)
		if err == nil && st == fs.stat && !failing {
			continue
		}
		if err == nil {
			var set *Set
			if _, set, err = LoadFile(fs.path); err == nil {
				fs.stat, failing = st, false
				fs.set.Store(set)
				if fs.OnReload != nil {
					fs.OnReload(set)
				}
				continue
			}
		} else {
			err = fmt.Errorf("keys file %s: %w", fs.path, err)
		}
		failing = true
		if fs.OnError != nil {
			fs.OnError(err)
		}
	}
}
