package keyring

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The Redis layout (SPEC section 5). Every record is a hash at
// RedisKeyPrefix+id whose field "record" holds the record's JSON (the same
// shape as in a keys file); a certificate principal is also found through
// RedisCertPrefix+<pin-type>:<value> → id; every change is announced on
// RedisChannel as {"id":…,"version":…}.
const (
	RedisKeyPrefix  = "scopegate:key:"
	RedisCertPrefix = "scopegate:cert:"
	RedisChannel    = "scopegate:keys"
	redisField      = "record"

	// RedisDenylistKey is the hash of the client-certificate denylist:
	// field = entry id (DeniedCert.ID), value = the entry's JSON. Every
	// change bumps RedisDenylistVersionKey and publishes
	// {"denylist":<version>} on RedisChannel.
	RedisDenylistKey        = "scopegate:denied_certs"
	RedisDenylistVersionKey = "scopegate:denied_certs:version"
)

// RedisRecordKey is the Redis key of a record.
func RedisRecordKey(id string) string { return RedisKeyPrefix + id }

// RedisPinKey is the Redis key under which a principal pin is indexed.
func RedisPinKey(pin [2]string) string { return RedisCertPrefix + PinKey(pin) }

// Announcement is what every change publishes on RedisChannel: a record's
// {"id":…,"version":…}, or a denylist change {"denylist":<version>}.
type Announcement struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
	// Denylist is set (and ID empty) when the denylist changed.
	Denylist int64 `json:"denylist,omitempty"`
}

// ErrExists is returned by RedisEditor.Create when the id is taken.
var ErrExists = errors.New("key id already taken")

// ParseRedisURL checks a redis:// or rediss:// URL and returns the client
// options for it. Errors never repeat the URL (it may carry a password).
func ParseRedisURL(raw string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redis URL: %v (want redis://[user:password@]host:port/db, or rediss:// for TLS)", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis URL: scheme %q: want redis:// or rediss:// (TLS)", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("redis URL: no host: want redis://[user:password@]host:port/db")
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("redis URL %s: %v", RedactURL(raw), strings.ReplaceAll(err.Error(), raw, RedactURL(raw)))
	}
	return opts, nil
}

// RedactURL is the URL with its password replaced by "xxxxx", for messages.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// newRedisClient makes a client with bounded timeouts; values the URL sets
// (dial_timeout=…, read_timeout=…, pool_size=…) are kept.
func newRedisClient(opts *redis.Options, timeout time.Duration) *redis.Client {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 2 * time.Second
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 2 * time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 2 * time.Second
	}
	if opts.PoolTimeout == 0 {
		opts.PoolTimeout = timeout
	}
	if opts.ClientName == "" {
		opts.ClientName = "scopegate"
	}
	// A context deadline bounds every command (lookups: 250 ms).
	opts.ContextTimeoutEnabled = true
	// No CLIENT SETINFO / MAINT_NOTIFICATIONS round trips on every new
	// connection: fewer steps between a restarted Redis and recovery.
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opts)
}

// marshalRecord renders a record as one line of JSON, as in a keys file
// (no HTML escaping).
func marshalRecord(v any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// decodeStored decodes and compiles a record read from Redis at id's key.
func decodeStored(id string, data []byte) (*Record, *Key, error) {
	rec, err := DecodeRecord(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s%s: %w", RedisKeyPrefix, id, err)
	}
	if rec.ID != id {
		return nil, nil, fmt.Errorf("%s%s: the record's id is %q", RedisKeyPrefix, id, rec.ID)
	}
	k, err := Compile(rec)
	if err != nil {
		return nil, nil, fmt.Errorf("%s%s: %w", RedisKeyPrefix, id, err)
	}
	return rec, k, nil
}

// writeScript is every change to a record, atomically: it checks that the
// stored version is the one the change was based on (optimistic
// concurrency; ARGV[1] = -1 means "must not exist yet"), that the version
// increases, that no other active principal holds a new pin, updates the
// certificate index (removing the pins the record no longer has, if they
// still point to it), writes the record and publishes the announcement.
// With an audit entry, it first appends it to the audit stream (XADD, no
// trimming): after every check and before any write, so a failing XADD
// changes nothing and an applied change always has its entry.
//
//	KEYS[1]  scopegate:key:<id>
//	KEYS[2]  scopegate:audit
//	ARGV     expected version, record JSON, new version, announcement, id,
//	         number of old pins, audit entry ("" for none), old pin keys…,
//	         new pin keys…
var writeScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'record')
local expected = tonumber(ARGV[1])
local newv = tonumber(ARGV[3])
if expected < 0 then
	if cur or redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('SCOPEGATE_EXISTS') end
else
	if not cur then return redis.error_reply('SCOPEGATE_MISSING') end
	local ok, rec = pcall(cjson.decode, cur)
	if not ok or type(rec) ~= 'table' then return redis.error_reply('SCOPEGATE_CORRUPT') end
	if (tonumber(rec['version']) or 0) ~= expected then return redis.error_reply('SCOPEGATE_CONFLICT') end
end
if newv <= expected or newv < 1 then return redis.error_reply('SCOPEGATE_VERSION') end
local id = ARGV[5]
local nold = tonumber(ARGV[6])
local old = {}
for i = 8, 7 + nold do old[#old + 1] = ARGV[i] end
local new = {}
for i = 8 + nold, #ARGV do new[#new + 1] = ARGV[i] end
for _, p in ipairs(new) do
	local holder = redis.call('GET', p)
	if holder and holder ~= id then
		local h = redis.call('HGET', 'scopegate:key:' .. holder, 'record')
		if h then
			local ok, hrec = pcall(cjson.decode, h)
			if not ok or type(hrec) ~= 'table' or hrec['disabled'] ~= true then
				return redis.error_reply('SCOPEGATE_PINNED ' .. holder)
			end
		end
	end
end
if ARGV[7] ~= '' then redis.call('XADD', KEYS[2], '*', 'entry', ARGV[7]) end
local keep = {}
for _, p in ipairs(new) do keep[p] = true end
for _, p in ipairs(old) do
	if not keep[p] and redis.call('GET', p) == id then redis.call('DEL', p) end
end
for _, p in ipairs(new) do redis.call('SET', p, id) end
redis.call('HSET', KEYS[1], 'record', ARGV[2])
redis.call('PUBLISH', 'scopegate:keys', ARGV[4])
return 1
`)

// errConflict: the record changed between read and write; retry.
var errConflict = errors.New("record changed concurrently")

// RedisEditor changes records in Redis for `caddy scoped-key --redis`:
// every write is one atomic script that bumps the version, keeps the
// certificate index consistent and announces the change.
type RedisEditor struct {
	client *redis.Client
	name   string // the URL without its password

	// Audit, when set, returns the audit entry of a change (before is nil
	// for a new record): the write script appends it to RedisAuditStream
	// in the same atomic step as the change. An error stops the change.
	Audit func(ctx context.Context, before, after *Record) (string, error)
}

// OpenRedisEditor connects to the store at rawURL (nothing is sent yet).
func OpenRedisEditor(rawURL string) (*RedisEditor, error) {
	opts, err := ParseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	return &RedisEditor{client: newRedisClient(opts, 5*time.Second), name: RedactURL(rawURL)}, nil
}

// String names the store (password redacted).
func (e *RedisEditor) String() string { return e.name }

// Close closes the connections.
func (e *RedisEditor) Close() error { return e.client.Close() }

// Get returns the record with this id, or nil when there is none.
func (e *RedisEditor) Get(ctx context.Context, id string) (*Record, error) {
	data, err := e.client.HGet(ctx, RedisRecordKey(id), redisField).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", e.name, err)
	}
	rec, _, err := decodeStored(id, data)
	return rec, err
}

// List returns every record, sorted by id. It walks the key space with
// SCAN (never KEYS, which blocks Redis) and reads records in pipelined
// batches.
func (e *RedisEditor) List(ctx context.Context) ([]*Record, error) {
	seen := map[string]bool{}
	var ids []string
	iter := e.client.Scan(ctx, 0, RedisKeyPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		id := strings.TrimPrefix(iter.Val(), RedisKeyPrefix)
		if !seen[id] { // SCAN may return a key twice
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", e.name, err)
	}
	slices.Sort(ids)
	recs := make([]*Record, 0, len(ids))
	for start := 0; start < len(ids); start += 500 {
		batch := ids[start:min(start+500, len(ids))]
		pipe := e.client.Pipeline()
		cmds := make([]*redis.StringCmd, len(batch))
		for i, id := range batch {
			cmds[i] = pipe.HGet(ctx, RedisRecordKey(id), redisField)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redis %s: %w", e.name, err)
		}
		for i, cmd := range cmds {
			data, err := cmd.Bytes()
			if errors.Is(err, redis.Nil) {
				continue // deleted since the scan, or not a record hash
			}
			if err != nil {
				return nil, fmt.Errorf("redis %s: %w", e.name, err)
			}
			rec, _, err := decodeStored(batch[i], data)
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
	}
	return recs, nil
}

// Create stores a new record (its version must be at least 1); ErrExists
// when the id is taken.
func (e *RedisEditor) Create(ctx context.Context, rec *Record) error {
	return e.write(ctx, -1, nil, nil, rec)
}

// Update applies fn to the record with this id and stores the result
// atomically: if another writer changed the record meanwhile, it reads it
// again and re-applies fn. fn must increase the version; returning
// ErrUnchanged stores nothing. An unknown id is an error naming the id.
func (e *RedisEditor) Update(ctx context.Context, id string, fn func(*Record) error) error {
	for attempt := 0; ; attempt++ {
		rec, err := e.Get(ctx, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("unknown key id %s in redis %s", id, e.name)
		}
		old, err := Compile(rec)
		if err != nil {
			return fmt.Errorf("%s%s: %w", RedisKeyPrefix, id, err)
		}
		oldVersion := rec.Version
		var before *Record
		if e.Audit != nil {
			if before, err = CloneRecord(rec); err != nil {
				return err
			}
		}
		if err := fn(rec); err != nil {
			if errors.Is(err, ErrUnchanged) {
				return nil
			}
			return err
		}
		if rec.ID != id {
			return errors.New("internal error: a change may not alter the key id")
		}
		if rec.Version <= oldVersion {
			return fmt.Errorf("internal error: a change must increase the version (%d)", oldVersion)
		}
		err = e.write(ctx, oldVersion, old, before, rec)
		if errors.Is(err, errConflict) && attempt < 50 {
			// Another writer won: back off a little, read again.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(1+rand.IntN(5*(attempt+1))) * time.Millisecond):
			}
			continue
		}
		return err
	}
}

// write runs writeScript. old is the compiled record being replaced and
// before the record as it was (both nil for a new one; before is only needed
// for the audit entry).
func (e *RedisEditor) write(ctx context.Context, expected int64, old *Key, before, rec *Record) error {
	k, err := Compile(rec)
	if err != nil {
		return err
	}
	data, err := marshalRecord(rec)
	if err != nil {
		return err
	}
	// The stored form must read back as what was meant.
	if _, _, err := decodeStored(rec.ID, []byte(data)); err != nil {
		return fmt.Errorf("not written: %w", err)
	}
	ann, err := json.Marshal(Announcement{ID: rec.ID, Version: rec.Version})
	if err != nil {
		return err
	}
	var oldPins, newPins []string
	if old != nil && old.IsPrincipal() {
		for _, p := range old.IndexPins() {
			oldPins = append(oldPins, RedisPinKey(p))
		}
	}
	if k.IsPrincipal() {
		for _, p := range k.IndexPins() {
			newPins = append(newPins, RedisPinKey(p))
		}
	}
	entry := ""
	if e.Audit != nil {
		if entry, err = e.Audit(ctx, before, rec); err != nil {
			return fmt.Errorf("not written: audit entry: %w", err)
		}
	}
	args := []any{strconv.FormatInt(expected, 10), data, strconv.FormatInt(rec.Version, 10), string(ann), rec.ID, strconv.Itoa(len(oldPins)), entry}
	for _, p := range oldPins {
		args = append(args, p)
	}
	for _, p := range newPins {
		args = append(args, p)
	}
	err = writeScript.Run(ctx, e.client, []string{RedisRecordKey(rec.ID), RedisAuditStream}, args...).Err()
	if err == nil {
		return nil
	}
	// Redis prefixes a script's error reply with "ERR ".
	msg := strings.TrimPrefix(err.Error(), "ERR ")
	switch {
	case strings.HasPrefix(msg, "SCOPEGATE_EXISTS"):
		return ErrExists
	case strings.HasPrefix(msg, "SCOPEGATE_CONFLICT"), strings.HasPrefix(msg, "SCOPEGATE_MISSING"):
		return errConflict
	case strings.HasPrefix(msg, "SCOPEGATE_CORRUPT"):
		return fmt.Errorf("%s%s: the stored record is not valid JSON; not changed", RedisKeyPrefix, rec.ID)
	case strings.HasPrefix(msg, "SCOPEGATE_VERSION"):
		return fmt.Errorf("key %s: version %d does not increase the stored version", rec.ID, rec.Version)
	case strings.HasPrefix(msg, "SCOPEGATE_PINNED "):
		return fmt.Errorf("key %s: a certificate pin is already used by the active principal %s (revoke it first)", rec.ID, strings.TrimPrefix(msg, "SCOPEGATE_PINNED "))
	}
	return fmt.Errorf("redis %s: %w", e.name, err)
}

// denyScript adds (ARGV[1] "add") or removes ("del") one denylist entry
// atomically with its version bump and announcement. It returns 0 when
// nothing changed (the entry was already there, or was not there), else
// the new denylist version.
//
//	KEYS[1]  scopegate:denied_certs
//	KEYS[2]  scopegate:denied_certs:version
//	ARGV     "add" | "del", entry id, entry JSON ("add")
var denyScript = redis.NewScript(`
if ARGV[1] == 'add' then
	if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
	redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
elseif ARGV[1] == 'del' then
	if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end
else
	return redis.error_reply('SCOPEGATE_OP')
end
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', 'scopegate:keys', '{"denylist":' .. v .. '}')
return v
`)

// DenyCert adds an entry to the denylist. It returns the new denylist
// version, or 0 when an entry with the same id was already there (then
// nothing changes: its reason and added_at stay).
func (e *RedisEditor) DenyCert(ctx context.Context, entry *DeniedCert) (int64, error) {
	if err := entry.Check(); err != nil {
		return 0, err
	}
	data, err := marshalRecord(entry)
	if err != nil {
		return 0, err
	}
	return e.runDeny(ctx, "add", entry.ID(), data)
}

// AllowCert removes the entry with this id (DeniedCert.ID). It returns the
// new denylist version, or 0 when there was no such entry.
func (e *RedisEditor) AllowCert(ctx context.Context, id string) (int64, error) {
	if _, err := parseDenyID(id); err != nil {
		return 0, err
	}
	return e.runDeny(ctx, "del", id, "")
}

func (e *RedisEditor) runDeny(ctx context.Context, op, id, data string) (int64, error) {
	v, err := denyScript.Run(ctx, e.client, []string{RedisDenylistKey, RedisDenylistVersionKey}, op, id, data).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis %s: %w", e.name, err)
	}
	return v, nil
}

// DeniedCerts returns the denylist's entries, sorted by id. An entry this
// version cannot read is an error naming its field.
func (e *RedisEditor) DeniedCerts(ctx context.Context) ([]*DeniedCert, error) {
	d, problems, err := loadDenylist(ctx, e.client)
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", e.name, err)
	}
	if len(problems) > 0 {
		return nil, problems[0]
	}
	return d.Entries(), nil
}

// loadDenylist reads the whole denylist and its version in one
// transaction (a consistent snapshot).
func loadDenylist(ctx context.Context, c *redis.Client) (*Denylist, []error, error) {
	var ver *redis.StringCmd
	var all *redis.MapStringStringCmd
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ver = p.Get(ctx, RedisDenylistVersionKey)
		all = p.HGetAll(ctx, RedisDenylistKey)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, err
	}
	var version int64
	if v, err := ver.Int64(); err == nil {
		version = v
	} else if !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("%s: %w", RedisDenylistVersionKey, err)
	}
	fields, err := all.Result()
	if err != nil {
		return nil, nil, err
	}
	d, problems := storedDenylist(fields, version)
	return d, problems, nil
}
