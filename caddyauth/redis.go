package caddyauth

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

func init() {
	// go-redis logs through a package-level logger (to stderr by
	// default); send it to Caddy's log at DEBUG. Our own store logs what
	// an operator needs (lost subscription, failed lookups) at ERROR.
	redis.SetLogger(redisLog{})
}

type redisLog struct{}

func (redisLog) Printf(_ context.Context, format string, v ...any) {
	caddy.Log().Named("redis").Debug(fmt.Sprintf(format, v...))
}

// redisStores holds the Redis stores in use, one per URL and cache TTL,
// shared by every scoped_auth handler that names them and kept across
// config reloads (a reload keeps the cache warm and the subscription up).
// The last handler's Cleanup closes a store: its subscription, its
// connections and its cache.
var redisStores = caddy.NewUsagePool()

type pooledRedisStore struct{ *keyring.RedisStore }

func (p pooledRedisStore) Destruct() error { return p.Close() }

// minCacheTTL: below this, entries would barely outlive the lookup that
// made them.
const minCacheTTL = 100 * time.Millisecond

func (h *ScopedAuth) provisionRedis() error {
	raw := caddy.NewReplacer().ReplaceKnown(h.Redis, "")
	if _, err := keyring.ParseRedisURL(raw); err != nil {
		return err
	}
	ttl := time.Duration(h.CacheTTL)
	if ttl == 0 {
		ttl = keyring.DefaultCacheTTL
	}
	if ttl < minCacheTTL {
		return fmt.Errorf("cache_ttl %v: want at least %v", ttl, minCacheTTL)
	}
	if ttl > 10*time.Minute {
		h.logger.Warn("long cache_ttl: a change whose announcement is lost, or a key revoked while Redis is unreachable, keeps being used that long",
			zap.Duration("cache_ttl", ttl))
	}
	key := raw + "\x00" + ttl.String()
	val, shared, err := redisStores.LoadOrNew(key, func() (caddy.Destructor, error) {
		s, err := keyring.OpenRedisStore(keyring.RedisOptions{URL: raw, CacheTTL: ttl, Counters: cacheCounters, Logger: h.logger})
		if err != nil {
			return nil, err
		}
		return pooledRedisStore{s}, nil
	})
	if err != nil {
		return err
	}
	s := val.(pooledRedisStore).RedisStore
	s.SetLogger(h.logger)
	h.redisKey, h.store = key, s
	h.logger.Debug("key store", zap.String("redis", s.String()), zap.Duration("cache_ttl", ttl), zap.Bool("shared", shared))
	return nil
}

// Cleanup releases the handler's Redis store; the last user closes it.
func (h *ScopedAuth) Cleanup() error {
	if h.redisKey == "" {
		return nil
	}
	key := h.redisKey
	h.redisKey = ""
	_, err := redisStores.Delete(key)
	return err
}
