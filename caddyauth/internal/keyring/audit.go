package keyring

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisAuditStream is the Redis stream of the CLI's audit log: one entry
// per change, field "entry" = the entry's JSON (the same line as in a keys
// file's audit log). It is never trimmed.
const RedisAuditStream = "scopegate:audit"

// redisAuditField is the stream entry's one field.
const redisAuditField = "entry"

// CloneRecord returns a deep copy of r (a change edits records in place;
// the audit entry needs the record as it was).
func CloneRecord(r *Record) (*Record, error) {
	data, err := marshalRecord(r)
	if err != nil {
		return nil, err
	}
	return DecodeRecord([]byte(data))
}

// AppendAudit appends one entry to RedisAuditStream on its own, for a
// change that was not written by a script that appends its entry itself.
func (e *RedisEditor) AppendAudit(ctx context.Context, entry string) error {
	err := e.client.XAdd(ctx, &redis.XAddArgs{Stream: RedisAuditStream, Values: []string{redisAuditField, entry}}).Err()
	if err != nil {
		return fmt.Errorf("redis %s: XADD %s: %w", e.name, RedisAuditStream, err)
	}
	return nil
}

// AuditEntries calls fn with every entry of RedisAuditStream, oldest
// first, reading it in batches with XRANGE (never blocking Redis for
// long). A stream entry without an "entry" field is an error.
func (e *RedisEditor) AuditEntries(ctx context.Context, fn func(streamID, entry string) error) error {
	start := "-"
	for {
		msgs, err := e.client.XRangeN(ctx, RedisAuditStream, start, "+", 1000).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("redis %s: XRANGE %s: %w", e.name, RedisAuditStream, err)
		}
		for _, m := range msgs {
			v, ok := m.Values[redisAuditField].(string)
			if !ok {
				return fmt.Errorf("redis %s: %s entry %s has no %q field", e.name, RedisAuditStream, m.ID, redisAuditField)
			}
			if err := fn(m.ID, v); err != nil {
				return err
			}
		}
		if len(msgs) < 1000 {
			return nil
		}
		// The ID just after the last one ("(" ranges need Redis 6.2).
		ms, seq, _ := strings.Cut(msgs[len(msgs)-1].ID, "-")
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			return fmt.Errorf("redis %s: %s: unexpected entry id %q", e.name, RedisAuditStream, msgs[len(msgs)-1].ID)
		}
		start = ms + "-" + strconv.FormatUint(n+1, 10)
	}
}
