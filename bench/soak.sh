#!/usr/bin/env bash
# Soak and fault test of scopegate's Caddy: mixed load over mutual TLS for
# DURATION with config reloads, keys-file and Redis key changes, and a Redis
# crash during the load; checks every decision, the masking, 5xx,
# connection failures and memory. Loopback only; stops by itself.
# See "Soak and fault test" in bench/README.md.
#
#   bench/soak.sh                 # DURATION=60s
#   SHORT=1 bench/soak.sh         # 15s, every fault compressed (for CI)
#
# Settings (environment):
#   DURATION=60s (15s with SHORT=1)  load time, 15s..10m
#   WORKERS=16                        concurrent clients
#   PORT_BASE=9700 ADMIN_PORT=3700    sites on PORT_BASE and PORT_BASE+1, admin API
#   CACHE_TTL=3s                      cache_ttl of the Redis site
#   BIG_MIB=3                         size of the large responses
#   TOLERATE=  (slow-store with SHORT=1)  report these, do not fail: slow-store (503s with
#                                     Redis up, only with caddy.log's deadline evidence),
#                                     reload-conn (k3 resets; only without NETNS)
#   NETNS=auto                        auto: as root, run everything (Redis, Caddy, upstream,
#                                     load) in a private network namespace (unshare -n,
#                                     loopback only) with net.ipv4.tcp_migrate_req=1 there;
#                                     the host's is never written. 0: never
#   SKIP_BUILD=0                      1: reuse bench/out/caddy and bench/out/soakrun
#
# Exit status: 0 every invariant held, 1 an invariant failed (the summary
# says which), 2 setup failed, 3 hard deadline, 130 interrupted.
# Work files, logs, profiles and summary.json: bench/out/soak/.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=bench/out
mkdir -p "$OUT"

if [ "${SHORT:-0}" = 1 ]; then
	DURATION=${DURATION:-15s}
else
	DURATION=${DURATION:-60s}
fi
export DURATION SHORT="${SHORT:-0}"

secs() { # "90s" / "2m" -> seconds
	case $1 in
	*ms) echo 1 ;;
	*s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;;
	*) echo "$1" ;;
	esac
}
# The program's own deadline is DURATION + 100 s; this one is the backstop.
HARD=$(($(secs "$DURATION") + 150))

command -v redis-server >/dev/null || {
	echo "soak.sh: redis-server is not on PATH (apt-get install redis-server)" >&2
	exit 2
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	echo "$(date +%H:%M:%S) soak.sh: building bench/out/caddy and bench/out/soakrun" >&2
	go build -o "$OUT/caddy" ./cmd/caddy
	go build -o "$OUT/soakrun" ./bench/soak
fi

cmd=("$OUT/soakrun" -caddy "$OUT/caddy" -out "$OUT/soak")
if [ "${NETNS:-auto}" != 0 ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null &&
	command -v ip >/dev/null && unshare -n true 2>/dev/null; then
	# A new network namespace has only a loopback interface, down: bring it
	# up, then run the program there (it sets tcp_migrate_req=1, which is
	# per namespace). Its children (Redis, Caddy, the CLI) inherit it.
	cmd=(unshare -n -- sh -c 'ip link set lo up && exec "$0" "$@"' "${cmd[@]}" -private-netns)
else
	echo "soak.sh: no private network namespace (needs root and unshare; NETNS=${NETNS:-auto}):" \
		"tcp_migrate_req stays as it is, new connections reset at a reload fail the run unless TOLERATE=reload-conn" >&2
fi

# Run in the background so that a Ctrl-C or TERM to this script reaches the
# program (which then stops Caddy and Redis) even through `timeout`.
timeout -k 10 "$HARD" "${cmd[@]}" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do # wait was interrupted by a signal
	wait "$pid" || rc=$?
done
exit "$rc"
