#!/usr/bin/env bash
# End-to-end cost of redact: download a large dense JSON document through
# reverse_proxy with and without redact, A/B interleaved, in one run: once
# from an upstream that sends a Content-Length, once from one that streams
# it chunked (reverse_proxy then flushes after every write).
#
#   bench/redact.sh                  # 64 MiB document, 10 rounds
#   SIZE=16 ROUNDS=6 bench/redact.sh
#   GOAMD64=v3 bench/redact.sh       # x86-64-v3 build (BMI, AVX2: CPUs since 2013-15)
#   PPROF=1 bench/redact.sh          # also: CPU profile of Caddy during 20
#                                    # redacted downloads -> bench/out/redact.pprof
#                                    # (go tool pprof -top bench/out/caddy bench/out/redact.pprof)
#
# The upstream is bench/download -serve, a process of its own as an API
# server is: with file_server in the Caddy under test, the upstream's work
# (and its garbage: 16 MB per download through Caddy's write path) ran on
# the same Go scheduler and GC as the proxy being measured.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
SIZE=${SIZE:-64}
ROUNDS=${ROUNDS:-10}
PORT=${PORT:-18480}
UPSTREAM=${UPSTREAM:-18481}
PPROF=${PPROF:-}
ADMIN=off
[ -z "$PPROF" ] || ADMIN=127.0.0.1:$((PORT + 2))
mkdir -p "$OUT"
go build -o "$OUT/caddy" ./cmd/caddy
go build -o "$OUT/download" ./bench/download
[ -s "$OUT/doc.json" ] && [ "$(($(stat -c %s "$OUT/doc.json") >> 20))" -ge "$SIZE" ] || "$OUT/download" -gen "$OUT/doc.json" -size "$SIZE"
cat >"$OUT/redact.caddyfile" <<CFG
{
	admin $ADMIN
	auto_https off
	default_bind 127.0.0.1
}
http://:$PORT {
	handle_path /plain/* {
		reverse_proxy 127.0.0.1:$UPSTREAM
	}
	handle_path /redact/* {
		redact
		reverse_proxy 127.0.0.1:$UPSTREAM
	}
}
CFG
"$OUT/download" -serve "127.0.0.1:$UPSTREAM" -dir "$OUT" -for 10m &
UP=$!
timeout 600 "$OUT/caddy" run --config "$OUT/redact.caddyfile" --adapter caddyfile >"$OUT/redact.log" 2>&1 &
PID=$!
trap 'kill $PID $UP 2>/dev/null || true; wait $PID $UP 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/plain/doc.json" -r 0-0 2>/dev/null && break; sleep 0.2; done
CADDY_PID=$(pgrep -P $PID -x caddy)
echo "== upstream with Content-Length"
"$OUT/download" -rounds "$ROUNDS" -pid "$CADDY_PID" -url-plain "http://127.0.0.1:$PORT/plain/doc.json" -url-redact "http://127.0.0.1:$PORT/redact/doc.json"
echo "== chunked upstream"
"$OUT/download" -rounds "$ROUNDS" -pid "$CADDY_PID" -url-plain "http://127.0.0.1:$PORT/plain/chunked/doc.json" -url-redact "http://127.0.0.1:$PORT/redact/chunked/doc.json"
if [ -n "$PPROF" ]; then
	curl -fsS -o "$OUT/redact.pprof" "http://$ADMIN/debug/pprof/profile?seconds=15" &
	PROF=$!
	sleep 0.5
	for _ in $(seq 20); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/redact/doc.json"; done
	wait $PROF
	echo "CPU profile: go tool pprof -top $OUT/caddy $OUT/redact.pprof"
fi
