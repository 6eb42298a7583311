#!/usr/bin/env bash
# Reloads under load: are the connection failures during `caddy reload`
# Caddy's or scopegate's? Runs, in the same run and alternating, a bare
# Caddy site and the same site with scoped_auth + redact (one Caddy built
# from ./cmd/caddy serves both) under the same mixed mTLS load and
# `caddy reload --force` every 2 s, with and without mitigations, and
# counts connection-level failures per variant and kind.
# See "Reloads under load: bare Caddy vs scopegate" in bench/README.md.
#
#   bench/reload.sh                       # default variants, 30 s each (about 2.5 min)
#   VARIANTS=bare,ours DURATION=60s bench/reload.sh
#
# Settings (environment):
#   VARIANTS=bare,ours,bare+idem+retry+migrate,ours+idem+retry+migrate
#            bare|ours, each with optional +idem +retry +h2 +migrate +sdelay +grace +idle
#            (+migrate needs a private network namespace: see NETNS)
#   DURATION=30s     load time per variant (split into ROUNDS alternating slices)
#   ROUNDS=2         how many times the variants alternate
#   WORKERS=8        concurrent clients over the four load kinds
#   RELOAD_EVERY=2s  interval of `caddy reload --force`
#   PORT_BASE=9760 ADMIN_PORT=3760   bare site, ours on PORT_BASE+1, admin API
#   NETNS=auto       auto: run in a private network namespace (unshare -n, as
#                    root) so net.ipv4.tcp_migrate_req can be set per variant
#                    without touching the host's; 0: never (drops +migrate variants)
#   SKIP_BUILD=0     1: reuse bench/out/caddy and bench/out/reloadrun
#
# Exit status: 0 measured (this is a measurement, not a pass/fail test),
# 2 setup failed, 3 hard deadline, 130 interrupted.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=bench/out
mkdir -p "$OUT"

VARIANTS=${VARIANTS:-bare,ours,bare+idem+retry+migrate,ours+idem+retry+migrate}
DURATION=${DURATION:-30s}
NETNS=${NETNS:-auto}

private=0
if [ "$NETNS" != 0 ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null &&
	unshare -n true 2>/dev/null; then
	private=1
fi
if [ "$private" = 0 ] && [[ $VARIANTS == *+migrate* ]]; then
	echo "reload.sh: no private network namespace (needs root and unshare): dropping the +migrate variants" >&2
	VARIANTS=$(tr ',' '\n' <<<"$VARIANTS" | grep -v '+migrate' | paste -sd, -)
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	echo "$(date +%H:%M:%S) reload.sh: building bench/out/caddy and bench/out/reloadrun" >&2
	go build -o "$OUT/caddy" ./cmd/caddy
	go build -o "$OUT/reloadrun" ./bench/reload
fi

secs() { # "90s" / "2m" -> seconds
	case $1 in
	*ms) echo 1 ;;
	*s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;;
	*) echo "$1" ;;
	esac
}
n=$(tr ',' '\n' <<<"$VARIANTS" | wc -l)
# The program's own deadline is n*DURATION + 90 s; this one is the backstop.
HARD=$((n * $(secs "$DURATION") + 120))

args=(-caddy "$OUT/caddy" -out "$OUT/reload" -variants "$VARIANTS" -duration "$DURATION"
	-rounds "${ROUNDS:-2}" -workers "${WORKERS:-8}" -reload-every "${RELOAD_EVERY:-2s}")
if [ "$private" = 1 ]; then
	# A new network namespace has only a loopback interface, down: bring it
	# up, then run the program there. Its tcp_migrate_req is its own (0 by
	# default); the host's is never written.
	cmd=(unshare -n -- sh -c 'ip link set lo up && exec "$0" "$@"' "$OUT/reloadrun" "${args[@]}" -private-netns)
else
	cmd=("$OUT/reloadrun" "${args[@]}")
fi

# In the background so that Ctrl-C or TERM reaches the program (which
# stops Caddy) even through `timeout`.
timeout -k 10 "$HARD" "${cmd[@]}" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do
	wait "$pid" || rc=$?
done
exit "$rc"
