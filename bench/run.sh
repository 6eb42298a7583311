#!/usr/bin/env bash
# A/B benchmark: bare Caddy (standard modules) vs scopegate's Caddy with
# scoped_auth in front of the same `respond`, both over mutual TLS on
# 127.0.0.1. See bench/README.md for how to read the output.
#
#   bench/run.sh                          # 10 rounds x 2 variants x (1s warm-up + 5s)
#   ROUNDS=4 bench/run.sh                 # quicker, noisier
#
# Settings (environment):
#   ROUNDS=10 DURATION=5s WARMUP=1s CONC=16   load shape (DURATION <= 60s)
#   MODE=auto      auto: use scoped_auth if bench/out/caddy has it, else the
#                  placeholder; scoped: require it; placeholder: ours == bare
#   PIN=0          1: pin servers to CPU 0 and the load generator to CPU 1
#   BARE_PORT=18443 OURS_PORT=18444
#   SKIP_BUILD=0   1: reuse the binaries and certificates already in bench/out
#
# Everything it starts is stopped on exit; each server also runs under
# `timeout`, so nothing outlives the run.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
ROUNDS=${ROUNDS:-10}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONC=${CONC:-16}
MODE=${MODE:-auto}
PIN=${PIN:-0}
BARE_PORT=${BARE_PORT:-18443}
OURS_PORT=${OURS_PORT:-18444}
SKIP_BUILD=${SKIP_BUILD:-0}

secs() { # "10s" / "1m" / "500ms" -> whole seconds, rounded up
	local v=$1
	case $v in
	*ms) echo $(((${v%ms} + 999) / 1000)) ;;
	*s) echo "${v%s}" ;;
	*m) echo $((${v%m} * 60)) ;;
	*) echo "$v" ;;
	esac
}
RUN_SECS=$(($(secs "$DURATION") + $(secs "$WARMUP")))
# Servers live for the whole measured part plus slack, then stop by themselves.
SERVER_LIFE=$((ROUNDS * 2 * (RUN_SECS + 3) + 60))

mkdir -p "$OUT"
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build --------------------------------------------------------------------
if [ "$SKIP_BUILD" != 1 ]; then
	log "building bare Caddy, scopegate Caddy, loadgen, gencerts, genkeys"
	go build -o "$OUT/caddy-bare" ./bench/bare
	go build -o "$OUT/caddy" ./cmd/caddy
	go build -o "$OUT/loadgen" ./bench/loadgen
	go build -o "$OUT/gencerts" ./examples/gencerts
	go build -o "$OUT/genkeys" ./examples/genkeys
	log "generating certificates and keys in bench/out"
	"$OUT/gencerts" -out "$OUT/certs" >/dev/null
	"$OUT/genkeys" -certs "$OUT/certs" -keys "$OUT/keys.json" -txt "$OUT/keys.txt" >/dev/null
fi

# The key under test: bound to the hris client certificate, scopes
# employees:read and gifts:read, all accounts.
KEY=$(sed -n 's/^hris=//p' "$OUT/keys.txt")
[ -n "$KEY" ] || { echo "no hris key in $OUT/keys.txt" >&2; exit 1; }

HAS_SCOPED=0
if "$OUT/caddy" list-modules 2>/dev/null | grep -qx 'http.handlers.scoped_auth'; then
	HAS_SCOPED=1
fi
case $MODE in
auto) if [ $HAS_SCOPED = 1 ]; then MODE=scoped; else MODE=placeholder; fi ;;
scoped) [ $HAS_SCOPED = 1 ] || { echo "MODE=scoped but bench/out/caddy has no http.handlers.scoped_auth" >&2; exit 1; } ;;
placeholder) ;;
*) echo "MODE must be auto, scoped or placeholder" >&2; exit 1 ;;
esac

# --- configs --------------------------------------------------------------------
write_config() { # name port with_auth
	local name=$1 port=$2 auth=$3
	{
		cat <<EOF
{
	admin off
	persist_config off
	default_bind 127.0.0.1
	auto_https disable_redirects
	skip_install_trust
	storage file_system $OUT/storage-$name
	servers {
		protocols h1 h2
	}
}

https://localhost:$port {
	tls $OUT/certs/server.pem $OUT/certs/server-key.pem {
		client_auth {
			mode verify_if_given
			trust_pool file $OUT/certs/ca.pem
		}
	}
EOF
		if [ "$auth" = 1 ]; then
			cat <<EOF
	scoped_auth {
		keys_file $OUT/keys.json
		account header X-Account-ID
		rule GET /v1/gifts* gifts:read
	}
EOF
		fi
		cat <<'EOF'
	respond `{"ok":true}` 200
}
EOF
	} >"$OUT/$name.caddyfile"
}
write_config bare "$BARE_PORT" 0
if [ "$MODE" = scoped ]; then
	write_config ours "$OURS_PORT" 1
else
	write_config ours "$OURS_PORT" 0
fi

# --- servers ----------------------------------------------------------------------
SERVER_CPU=()
LOAD_CPU=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null; then
	SERVER_CPU=(taskset -c 0)
	LOAD_CPU=(taskset -c 1)
fi

start_server() { # name binary
	local name=$1 bin=$2
	"${SERVER_CPU[@]}" timeout "$SERVER_LIFE" "$bin" run --config "$OUT/$name.caddyfile" --adapter caddyfile \
		>"$OUT/$name.log" 2>&1 &
	PIDS+=($!)
}

status_of() { # port [curl args...]
	local port=$1
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$OUT/certs/ca.pem" \
		--resolve "localhost:$port:127.0.0.1" "$@" "https://localhost:$port/v1/gifts" || true
}

wait_ready() { # name port
	local name=$1 port=$2
	for _ in $(seq 1 100); do
		case $(status_of "$port") in
		000) sleep 0.2 ;;
		*) return 0 ;;
		esac
	done
	echo "$name did not come up on port $port; see $OUT/$name.log" >&2
	tail -5 "$OUT/$name.log" >&2
	exit 1
}

log "starting servers (mode: $MODE): bare on $BARE_PORT, ours on $OURS_PORT"
start_server bare "$OUT/caddy-bare"
start_server ours "$OUT/caddy"
wait_ready bare "$BARE_PORT"
wait_ready ours "$OURS_PORT"

# The Caddy processes are the children of the `timeout` wrappers; loadgen
# reads their CPU time from /proc to report CPU per request.
child_of() { ps -o pid= --ppid "$1" 2>/dev/null | head -1 | tr -d ' '; }
BARE_PID=$(child_of "${PIDS[0]}")
OURS_PID=$(child_of "${PIDS[1]}")
PID_ARGS_bare=()
PID_ARGS_ours=()
if [ -n "$BARE_PID" ] && [ -n "$OURS_PID" ] && [ -r "/proc/$BARE_PID/stat" ]; then
	PID_ARGS_bare=(-pid "$BARE_PID")
	PID_ARGS_ours=(-pid "$OURS_PID")
fi

CLIENT=(--cert "$OUT/certs/hris.pem" --key "$OUT/certs/hris-key.pem")
HDRS=(-H "Authorization: Bearer $KEY" -H "X-Account-ID: acme-us")
for port in "$BARE_PORT" "$OURS_PORT"; do
	s=$(status_of "$port" "${CLIENT[@]}" "${HDRS[@]}")
	[ "$s" = 200 ] || { echo "sanity: port $port answered $s to the benchmark request, want 200" >&2; exit 1; }
done
if [ "$MODE" = scoped ]; then
	# (No client certificate either: the hris certificate alone is a
	# certificate principal in the generated keys file.)
	s=$(status_of "$OURS_PORT")
	[ "$s" = 401 ] || { echo "sanity: scoped_auth should refuse a request without key or certificate (401), got $s" >&2; exit 1; }
	s=$(status_of "$OURS_PORT" --cert "$OUT/certs/other.pem" --key "$OUT/certs/other-key.pem" "${HDRS[@]}")
	[ "$s" = 403 ] || { echo "sanity: scoped_auth should refuse the key with the wrong certificate (403), got $s" >&2; exit 1; }
	log "sanity: 200 with key + its certificate, 401 without, 403 with the wrong certificate: scoped_auth is in the path"
else
	log "PLACEHOLDER: ours runs the bare config (no scoped_auth); ratios should be ~1.0"
fi

# --- rounds -----------------------------------------------------------------------
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
load() { # label round port
	local pidargs
	if [ "$1" = bare ]; then pidargs=("${PID_ARGS_bare[@]}"); else pidargs=("${PID_ARGS_ours[@]}"); fi
	"${LOAD_CPU[@]}" "$OUT/loadgen" -label "$1" -round "$2" "${pidargs[@]}" \
		-url "https://localhost:$3/v1/gifts" -connect "127.0.0.1:$3" \
		-ca "$OUT/certs/ca.pem" -cert "$OUT/certs/hris.pem" -key "$OUT/certs/hris-key.pem" \
		-header "Authorization: Bearer $KEY" -header "X-Account-ID: acme-us" \
		-c "$CONC" -warmup "$WARMUP" -d "$DURATION" | tee -a "$RESULTS"
}
log "$ROUNDS rounds x 2 variants x ($WARMUP warm-up + $DURATION), $CONC connections; about $((ROUNDS * 2 * RUN_SECS))s"
for r in $(seq 1 "$ROUNDS"); do
	# Alternate the order so a drift in machine load hits both variants alike.
	if [ $((r % 2)) = 1 ]; then
		load bare "$r" "$BARE_PORT"
		load ours "$r" "$OURS_PORT"
	else
		load ours "$r" "$OURS_PORT"
		load bare "$r" "$BARE_PORT"
	fi
done

# --- summary ----------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
awk -v mode="$MODE" -v load_before="$LOAD_BEFORE" -v load_after="$LOAD_AFTER" -v ncpu="$(nproc 2>/dev/null || echo '?')" '
function get(line, key,   re) {
	re = "\"" key "\":[^,}]*"
	if (!match(line, re)) return ""
	return substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
}
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
	return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{
	l = get($0, "label"); gsub(/"/, "", l); r = get($0, "round") + 0
	# +0: substr() gives strings, which would sort as text.
	rps[l, r] = get($0, "rps") + 0; p99[l, r] = get($0, "p99_us") + 0; p50[l, r] = get($0, "p50_us") + 0
	cpu[l, r] = get($0, "server_cpu_us_per_req") + 0
	bad[l] += get($0, "errors") + get($0, "non2xx")
	if (r > rounds) rounds = r
}
END {
	printf "\n%-6s %9s %9s %7s %9s %9s %7s %9s %9s %7s\n", "round", "bare rps", "ours rps", "ratio", "bare p99", "ours p99", "ratio", "bare cpu", "ours cpu", "ratio"
	n = 0
	for (r = 1; r <= rounds; r++) {
		if (!((("bare", r) in rps) && (("ours", r) in rps))) continue
		n++
		tr[n] = rps["ours", r] / rps["bare", r]; pr[n] = p99["ours", r] / p99["bare", r]
		br[n] = rps["bare", r]; orps[n] = rps["ours", r]; bp[n] = p99["bare", r]; op[n] = p99["ours", r]
		bc[n] = cpu["bare", r]; oc[n] = cpu["ours", r]; dc[n] = oc[n] - bc[n]
		cr[n] = (bc[n] > 0) ? oc[n] / bc[n] : 0
		printf "%-6d %9.0f %9.0f %7.3f %7dus %7dus %7.3f %7.1fus %7.1fus %7.3f\n", r, br[n], orps[n], tr[n], bp[n], op[n], pr[n], bc[n], oc[n], cr[n]
	}
	if (n == 0) { print "no complete round"; exit 1 }
	printf "%-6s %9.0f %9.0f %7.3f %7dus %7dus %7.3f %7.1fus %7.1fus %7.3f\n", "median", median(br, n), median(orps, n), median(tr, n), median(bp, n), median(op, n), median(pr, n), median(bc, n), median(oc, n), median(cr, n)
	printf "\nmode: %s; load average before %s, after %s (%s CPUs)\n", mode, load_before, load_after, ncpu
	printf "throughput ratio ours/bare (median of per-round ratios): %.3f\n", median(tr, n)
	printf "p99 latency ratio ours/bare (median of per-round ratios): %.3f\n", median(pr, n)
	if (median(bc, n) > 0) {
		printf "server CPU per request ratio ours/bare (median of per-round ratios): %.3f\n", median(cr, n)
		printf "server CPU added per request (median of per-round differences): %.1f us\n", median(dc, n)
	}
	if (bad["bare"] + bad["ours"] > 0) printf "WARNING: errors or non-2xx answers: bare %d, ours %d (see results.jsonl)\n", bad["bare"], bad["ours"]
}' "$RESULTS"
log "raw results: $RESULTS; server logs: $OUT/bare.log $OUT/ours.log"
