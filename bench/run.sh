#!/usr/bin/env bash
# Load benchmark of the invite path (issue 5), run by `make bench`.
#
# Builds the server and the bare-Echo baseline (bench/baseline), starts the
# baseline, the server on a fresh SQLite data directory and the server on a
# fresh PostgreSQL database, all on loopback, then drives one at a time with
# the same wrk settings, rounds interleaved (baseline, sqlite, postgres; ...).
# Every request invites a different email (bench/invite.lua). Prints one table:
# medians over the rounds of req/s, p50, p99 and server CPU per request, the
# summed errors, and the ratios to the baseline of the same run.
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10s]   BENCH_CONNECTIONS [64]   BENCH_THREADS [2]
#   BENCH_ROUNDS [3]       BENCH_WARMUP [2s]        BENCH_TIMEOUT [2s] (wrk --timeout)
#   BENCH_POSTGRES_DSN [postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable]
#                          (admin connection; a database cp_bench_<random> is
#                          created and dropped; set BENCH_POSTGRES_DSN= to skip)
#   BENCH_SERVE_FLAGS      extra flags for `controlplane serve` (e.g. --db-max-conns 32)
#   GO [go]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
GO=${GO:-go}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-2s}
TIMEOUT=${BENCH_TIMEOUT:-2s}
PG_DSN=${BENCH_POSTGRES_DSN-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
read -r -a SERVE_EXTRA <<<"${BENCH_SERVE_FLAGS:-}"

say() { printf '%s\n' "$*" >&2; }

# --- wrk -------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "bench: installing wrk (apt-get install -y wrk)"
		apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null; }
	else
		say "bench: wrk not found; install it (Debian/Ubuntu: sudo apt-get install wrk) and rerun"
		exit 1
	fi
fi

# --- cleanup -----------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cp-bench.XXXXXX")
PIDS=()
PG_DB=""
PG_ADMIN=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ -n "$PG_DB" ]; then
		psql "$PG_ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
			say "bench: could not drop database $PG_DB"
	fi
	if [ "$rc" != 0 ]; then
		for f in "$TMP"/*.log; do
			[ -s "$f" ] || continue
			say "--- tail of $(basename "$f")"
			tail -n 20 "$f" >&2 || true
		done
	fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers -----------------------------------------------------------------
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	say "bench: no free port found"
	exit 1
}

# wait_ready URL PID: waits until GET URL answers 200 (fails if PID exits).
wait_ready() {
	local url=$1 pid=$2 code
	for _ in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || { say "bench: process $pid exited before $url was ready"; exit 1; }
		code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
		[ "$code" = 200 ] && return
		sleep 0.1
	done
	say "bench: $url not ready after 30s"
	exit 1
}

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: utime+stime of the process (all threads), in clock ticks.
cpu_ticks() {
	local stat rest
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) } # fields from 3 (state) on; comm may contain spaces
	# shellcheck disable=SC2086
	set -- $rest
	echo $((${12} + ${13})) # fields 14 (utime) and 15 (stime)
}

# to_ms VALUE: wrk latency like 812.00us, 1.23ms, 2.01s, 1.00m -> milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}

# --- build -------------------------------------------------------------------
say "bench: building server and baseline into $TMP"
"$GO" build -o "$TMP/controlplane" .
"$GO" build -o "$TMP/baseline" ./bench/baseline
CP="$TMP/controlplane"

TARGETS=()
declare -A URL PID TOKEN

# --- baseline ----------------------------------------------------------------
port=$(free_port)
"$TMP/baseline" -addr "127.0.0.1:$port" >"$TMP/baseline.log" 2>&1 &
PID[baseline]=$!
PIDS+=("${PID[baseline]}")
URL[baseline]="http://127.0.0.1:$port"
TOKEN[baseline]=""
for _ in $(seq 1 300); do
	code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"email":"a@b.test"}' "${URL[baseline]}/v0/users" || true)
	[ "$code" = 200 ] && break
	kill -0 "${PID[baseline]}" 2>/dev/null || { say "bench: baseline exited"; exit 1; }
	sleep 0.1
done
TARGETS+=(baseline)

# start_server NAME [--db DSN]: fresh data dir, workspace "bench", token, serve.
start_server() {
	local name=$1
	shift
	local dir="$TMP/data-$name" port
	mkdir -p "$dir"
	"$CP" workspace create bench --admin-sub bench-admin --admin-email admin@bench.test \
		--data-dir "$dir" "$@" >"$TMP/$name-setup.log" 2>&1
	TOKEN[$name]=$("$CP" token --data-dir "$dir" --sub bench-admin --email admin@bench.test \
		--scope workspaces:invite --ttl 2h 2>>"$TMP/$name-setup.log")
	port=$(free_port)
	# --log-level warn: the info level writes an access-log line per request,
	# which would be measured too; warn keeps only problems.
	# --mail-dispatcher=false: the measured path ends with the invitation and
	# its outbox row committed; delivering the outbox is mail-worker's job.
	# --rate-limits=false: one admin inviting thousands a second is exactly
	# what the limits refuse; the benchmark measures the path behind them.
	"$CP" serve --data-dir "$dir" --addr "127.0.0.1:$port" --log-level warn --mail-dispatcher=false --rate-limits=false "$@" "${SERVE_EXTRA[@]}" \
		>"$TMP/$name.log" 2>&1 &
	PID[$name]=$!
	PIDS+=("${PID[$name]}")
	URL[$name]="http://127.0.0.1:$port"
	wait_ready "${URL[$name]}/readyz" "${PID[$name]}"
	# one real invite, so a broken setup fails here and not as 100% errors
	code=$(curl -s -o "$TMP/$name-probe.json" -w '%{http_code}' -X POST "${URL[$name]}/v0/users" \
		-H "Authorization: Bearer ${TOKEN[$name]}" -H "X-Blaxel-Workspace: bench" \
		-H "Content-Type: application/json" -d '{"email":"probe@bench.test"}' || true)
	if [ "$code" != 200 ]; then
		say "bench: probe invite on $name answered $code: $(head -c 300 "$TMP/$name-probe.json")"
		exit 1
	fi
	TARGETS+=("$name")
}

# --- sqlite ------------------------------------------------------------------
say "bench: starting server on SQLite"
start_server sqlite

# --- postgres ----------------------------------------------------------------
PG_NOTE=""
if [ -z "$PG_DSN" ]; then
	PG_NOTE="postgres: skipped (BENCH_POSTGRES_DSN empty)"
elif ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
	PG_NOTE="postgres: skipped (psql/pg_isready not installed)"
elif ! pg_isready -q -d "$PG_DSN" || ! psql "$PG_DSN" -qAtX -c 'select 1' >/dev/null 2>&1; then
	PG_NOTE="postgres: skipped (cannot connect to $PG_DSN)"
else
	PG_ADMIN=$PG_DSN
	db="cp_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
	psql "$PG_ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null
	PG_DB=$db
	base=${PG_DSN%%\?*}
	query=""
	[ "$base" != "$PG_DSN" ] && query="?${PG_DSN#*\?}"
	hostpart=${base#*://}
	scheme=${base%%://*}
	hostpart=${hostpart%%/*}
	PG_BENCH_DSN="$scheme://$hostpart/$db$query"
	PG_NOTE="postgres: $(psql "$PG_ADMIN" -qAtX -c 'show server_version'), database $db (dropped at exit)"
	say "bench: starting server on PostgreSQL ($db)"
	start_server postgres --db "$PG_BENCH_DSN"
fi
[ -n "$PG_NOTE" ] && say "bench: $PG_NOTE"

# --- load ------------------------------------------------------------------
WRK=(wrk -t"$THREADS" -c"$CONNS" --timeout "$TIMEOUT" --latency -s "$ROOT/bench/invite.lua")
RESULTS="$TMP/results.tsv"
: >"$RESULTS"

# measure NAME ROUND: warm-up, then one measured wrk run; appends a row to $RESULTS.
measure() {
	local name=$1 round=$2 out="$TMP/wrk-$1-$2.txt" t0 t1 reqs rps p50 p99 sock non2xx lua cpu errs
	BENCH_TOKEN=${TOKEN[$name]} BENCH_RUN="w$round" "${WRK[@]}" -d"$WARMUP" "${URL[$name]}" >"$TMP/warm-$name-$round.txt" 2>&1
	t0=$(cpu_ticks "${PID[$name]}")
	BENCH_TOKEN=${TOKEN[$name]} BENCH_RUN="r$round" "${WRK[@]}" -d"$DURATION" "${URL[$name]}" >"$out" 2>&1
	t1=$(cpu_ticks "${PID[$name]}")
	kill -0 "${PID[$name]}" 2>/dev/null || { say "bench: $name died during round $round"; exit 1; }
	reqs=$(awk '/requests in/ {print $1; exit}' "$out")
	rps=$(awk '/^Requests\/sec:/ {print $2; exit}' "$out")
	p50=$(awk '$1 == "50%" {print $2; exit}' "$out")
	p99=$(awk '$1 == "99%" {print $2; exit}' "$out")
	if [ -z "$reqs" ] || [ -z "$rps" ] || [ -z "$p50" ] || [ -z "$p99" ]; then
		say "bench: could not parse wrk output for $name round $round:"
		cat "$out" >&2
		exit 1
	fi
	sock=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10; exit}' "$out")
	non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$out")
	lua=$(awk '/^lua_non2xx:/ {print $2; exit}' "$out")
	sock=${sock:-0} non2xx=${non2xx:-0} lua=${lua:-0}
	[ "$lua" -gt "$non2xx" ] && non2xx=$lua
	errs=$((sock + non2xx))
	cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0)}')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" \
		"$cpu" "$errs" "$reqs" >>"$RESULTS"
	say "bench: round $round $name: $rps req/s, p50 $p50, p99 $p99, ${cpu} us CPU/req, $errs errors ($reqs requests)"
	if [ "$errs" -gt 0 ]; then
		grep -E 'non-2xx|Socket errors' "$out" | head -n 4 >&2 || true
	fi
}

say "bench: ${ROUNDS} rounds of: ${TARGETS[*]} (wrk -t$THREADS -c$CONNS -d$DURATION, warm-up $WARMUP each)"
for round in $(seq 1 "$ROUNDS"); do
	for name in "${TARGETS[@]}"; do
		measure "$name" "$round"
	done
done

# --- report ------------------------------------------------------------------
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n {print $c}' "$RESULTS"; }

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain 2>/dev/null)" ] && rev="$rev (dirty tree)"
{
	echo
	echo "make bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, ${cpu_model:-unknown CPU}, $("$GO" env GOVERSION), commit $rev"
	echo "wrk -t$THREADS -c$CONNS -d$DURATION --timeout $TIMEOUT --latency (+ $WARMUP warm-up), $ROUNDS interleaved rounds, loopback, load generator on the same CPUs"
	echo "server: --log-level warn --mail-dispatcher=false --rate-limits=false${BENCH_SERVE_FLAGS:+ $BENCH_SERVE_FLAGS}; every request invites a new email; $PG_NOTE"
	echo
	bl_rps=$(col baseline 3 | median)
	bl_p99=$(col baseline 5 | median)
	printf '%-9s %10s %9s %9s %11s %7s %9s %9s\n' target "req/s" "p50 ms" "p99 ms" "CPU us/req" errors "rps/base" "p99/base"
	for name in "${TARGETS[@]}"; do
		rps=$(col "$name" 3 | median)
		p50=$(col "$name" 4 | median)
		p99=$(col "$name" 5 | median)
		cpu=$(col "$name" 6 | median)
		errs=$(col "$name" 7 | awk '{s += $1} END {print s + 0}')
		awk -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$cpu" -v e="$errs" -v br="$bl_rps" -v bp="$bl_p99" 'BEGIN {
			printf "%-9s %10.0f %9.2f %9.2f %11.1f %7d %9.2f %9.2f\n", n, r, a, b, c, e, (br > 0 ? r / br : 0), (bp > 0 ? b / bp : 0) }'
	done
	echo
	echo "medians over rounds; errors = socket errors + non-2xx, summed over rounds; rps/base and p99/base = server median / baseline median of this run; CPU = utime+stime of the server process per request"
}
