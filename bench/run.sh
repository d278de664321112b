#!/usr/bin/env bash
# Load benchmark of the invite path, run by `make bench`.
#
# Builds the server, the bare-Echo baseline (bench/baseline) and the
# spec-first floor (bench/floor: Echo + kin-openapi's validator over the
# YAML, security included, a warm token table, no storage), starts them,
# the server on a fresh SQLite data directory and the server on a fresh
# PostgreSQL database, all on loopback, then drives one at a time with the
# same wrk settings, rounds interleaved (baseline, floor, sqlite, ...,
# postgres; ...). With BENCH_LIMITS=1 two more SQLite servers join the
# rounds: rate limits on in memory (sqlite+limits) and shared through Redis
# (sqlite+redis), quotas set so high that nothing is refused. Every request
# invites a different email (bench/invite.lua). Prints one table: medians
# over the rounds of req/s, p50, p99 and server CPU per request, the summed
# errors, the ratios to the baseline (information) and to the floor of the
# same run, and whether each server meets its goal (SQLite >= 0.75,
# PostgreSQL >= 0.55 of the floor's req/s, p99 at most 2x the floor's, no
# errors; shared limits >= 0.90 of in-memory limits); a note when the VM is
# in its fast state.
#
# Then the cases of the scale goals (BENCH_SCALE=1), on a second server per
# database whose data bench/seed loads with bulk SQL before it starts
# (workspaces: small = 1 member; big = 20,000 members and 100,000
# invitations; list100 / list10k = 100 / 10,000 entries; inv-1 … inv-1000,
# each inviting invitee@bench.test). Interleaved rounds of:
#   invite into small; invite into big (ratio to small, goal >= 0.9);
#   SQLite: invite into small while 4 more connections invite into big
#   (ratio to small alone, goal >= 0.9);
#   GET /v0/users?limit=100 on list100, on list10k, and on list10k's page
#   76 (its cursor found by following rel="next") (ratios, goal >= 0.8);
#   GET /v0/users unpaged on list10k, 64 in flight (peak server RSS, goal < 100 MB);
#   GET /v0/profile/invitations as invitee (1,000 entries; req/s x entries,
#   goal >= 50,000 invitations/s).
# Peak RSS is the server's VmHWM, reset (/proc/PID/clear_refs) before each
# case's warm-up. A case whose probe request does not answer 200 (e.g. a
# server without ?limit=) is reported as not measured, with the answer.
# Prints a second table: medians of req/s, p50, p99, summed errors, peak RSS,
# the goal's measure and whether it is met.
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10s]   BENCH_CONNECTIONS [64]   BENCH_THREADS [2]
#   BENCH_ROUNDS [3]       BENCH_WARMUP [2s]        BENCH_TIMEOUT [2s] (wrk --timeout)
#   BENCH_POSTGRES_DSN [postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable]
#                          (admin connection; a database cp_bench_<random> is
#                          created and dropped; set BENCH_POSTGRES_DSN= to skip)
#   BENCH_SERVE_FLAGS      extra flags for `controlplane serve` (e.g. --db-max-conns 32)
#   BENCH_LIMITS [1]       0 leaves out the two rate-limited SQLite servers
#   BENCH_REDIS_URL [redis://127.0.0.1:6379/0]  Redis of sqlite+redis (keys
#                          under a cp-bench-<random>: prefix, expiring on their
#                          own); the row is skipped when it does not answer
#   BENCH_SCALE [1]        0 skips the scale cases and their seeding
#   BENCH_SCALE_DURATION [5s]  measured time of each scale case per round
#                          (same connections, threads and rounds; the
#                          unpaged list and my invitations get --timeout 30s)
#   BENCH_SCALE_WARMUP [1s]  warm-up of each scale case per round
#   GO [go]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
GO=${GO:-go}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-2s}
TIMEOUT=${BENCH_TIMEOUT:-2s}
PG_DSN=${BENCH_POSTGRES_DSN-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
SCALE=${BENCH_SCALE:-1}
SCALE_DURATION=${BENCH_SCALE_DURATION:-5s}
SCALE_WARMUP=${BENCH_SCALE_WARMUP:-1s}
LIMITS=${BENCH_LIMITS:-1}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
# Quotas no benchmark run reaches: the limited rows measure what counting
# costs, not refusals.
HIGH=1000000/s
LIMIT_FLAGS=(--rate-limits=true --rate-limit-caller "$HIGH" --rate-limit-workspace-writes "$HIGH" --rate-limit-workspace-invites "$HIGH")

need_wrk
bench_tmp cp-bench
machine_busy

# --- build -------------------------------------------------------------------
say "bench: building server, baseline and floor into $TMP"
"$GO" build -o "$TMP/controlplane" .
"$GO" build -o "$TMP/baseline" ./bench/baseline
"$GO" build -o "$TMP/floor" ./bench/floor
if [ "$SCALE" != 0 ]; then "$GO" build -o "$TMP/seed" ./bench/seed; fi
CP="$TMP/controlplane"

TARGETS=()

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

# --- sqlite ------------------------------------------------------------------
say "bench: starting server on SQLite"
start_invite_server sqlite "$CP"

# --- floor -------------------------------------------------------------------
# Given the SQLite server's token, so it reads the same request bytes.
start_floor floor "$TMP/floor" "${TOKEN[sqlite]}"
TARGETS+=(floor sqlite)

# --- sqlite with rate limits, in memory and through Redis ------------------
# `serve` gets --rate-limits=false first (lib.sh); the flags here come later
# and win.
LIMITS_NOTE=""
if [ "$LIMITS" != 0 ]; then
	say "bench: starting servers on SQLite with rate limits in memory and through Redis"
	SERVE_ONLY=("${LIMIT_FLAGS[@]}")
	start_invite_server sqlite+limits "$CP"
	TARGETS+=(sqlite+limits)
	if redis_up "$REDIS_URL"; then
		SERVE_ONLY=("${LIMIT_FLAGS[@]}" --redis "$REDIS_URL" --redis-prefix "cp-bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n'):")
		start_invite_server sqlite+redis "$CP"
		TARGETS+=(sqlite+redis)
		LIMITS_NOTE="; sqlite+limits and sqlite+redis: ${LIMIT_FLAGS[*]}, the latter with --redis (a local Redis)"
	else
		LIMITS_NOTE="; sqlite+limits: ${LIMIT_FLAGS[*]}; sqlite+redis skipped (no Redis answers at BENCH_REDIS_URL)"
		say "bench: no Redis answers at $REDIS_URL: the shared-limits row is skipped"
	fi
	SERVE_ONLY=()
fi

# --- postgres ----------------------------------------------------------------
PG_DB=""
pg_admin "$PG_DSN"
if [ -n "$PG_ADMIN" ]; then
	new_pg_db
	PG_NOTE="$PG_NOTE, database $PG_DB (dropped at exit)"
	say "bench: starting server on PostgreSQL ($PG_DB)"
	start_invite_server postgres "$CP" --db "$PG_BENCH_DSN"
	TARGETS+=(postgres)
fi
say "bench: $PG_NOTE"

# --- load ------------------------------------------------------------------
WRK=(wrk -t"$THREADS" -c"$CONNS" --timeout "$TIMEOUT" --latency -s "$ROOT/bench/invite.lua")
RESULTS="$TMP/results.tsv"
: >"$RESULTS"

# run_case KEY ROUND PID URL DURATION RESULTS WRK-ARGS...: warm-up, then one
# measured run of WRK-ARGS against URL (the caller passes BENCH_TOKEN and the
# other BENCH_* variables of the wrk script in the environment; RUN_TAG
# prefixes BENCH_RUN). Appends a row to RESULTS: key, round, req/s, p50 ms,
# p99 ms, server CPU us/req, errors, requests, peak server RSS in kB.
run_case() {
	local key=$1 round=$2 pid=$3 url=$4 duration=$5 results=$6 t0 t1 stats reqs rps p50 p99 cpu errs hwm
	shift 6
	local file=${key//\//-} out
	out="$TMP/wrk-$file-$round.txt"
	# VmHWM is the process's peak RSS; writing 5 to clear_refs resets it
	# (Linux >= 4.0), so the peak is this case's, warm-up included.
	echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || RSS_NOTE=" (could not reset VmHWM: peaks are since start)"
	BENCH_RUN="${RUN_TAG:-}w$round" "$@" -d"${CASE_WARMUP:-$WARMUP}" "$url" >"$TMP/warm-$file-$round.txt" 2>&1
	t0=$(cpu_ticks "$pid")
	BENCH_RUN="${RUN_TAG:-}r$round" "$@" -d"$duration" "$url" >"$out" 2>&1
	t1=$(cpu_ticks "$pid")
	kill -0 "$pid" 2>/dev/null || { say "bench: $key died during round $round"; exit 1; }
	hwm=$(awk '/^VmHWM:/ {print $2; exit}' "/proc/$pid/status")
	# an assignment, not read <<<"$(...)", so that wrk_stats' exit on
	# unparsable output stops the script
	stats=$(wrk_stats "$out")
	read -r reqs rps p50 p99 errs <<<"$stats"
	cpu=$(cpu_us_per_req $((t1 - t0)) "$reqs")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$round" "$rps" "$p50" "$p99" \
		"$cpu" "$errs" "$reqs" "${hwm:-0}" >>"$results"
	say "bench: round $round $key: $rps req/s, p50 $p50 ms, p99 $p99 ms, ${cpu} us CPU/req, $errs errors ($reqs requests), peak RSS $((${hwm:-0} / 1024)) MB"
	if [ "$errs" -gt 0 ]; then
		grep -E 'non-2xx|Socket errors' "$out" | head -n 4 >&2 || true
	fi
}

# measure NAME ROUND: the invite case of the first table against server NAME.
measure() {
	BENCH_TOKEN=${TOKEN[$1]} run_case "$1" "$2" "${PID[$1]}" "${URL[$1]}" "$DURATION" "$RESULTS" "${WRK[@]}"
}

say "bench: ${ROUNDS} rounds of: ${TARGETS[*]} (wrk -t$THREADS -c$CONNS -d$DURATION, warm-up $WARMUP each)"
for round in $(seq 1 "$ROUNDS"); do
	for name in "${TARGETS[@]}"; do
		measure "$name" "$round"
	done
done

# --- report ------------------------------------------------------------------
col() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n {print $c}' "$RESULTS"; }

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain 2>/dev/null)" ] && rev="$rev (dirty tree)"
{
	echo
	echo "make bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, ${cpu_model:-unknown CPU}, $("$GO" env GOVERSION), commit $rev"
	echo "wrk -t$THREADS -c$CONNS -d$DURATION --timeout $TIMEOUT --latency (+ $WARMUP warm-up), $ROUNDS interleaved rounds, loopback, load generator on the same CPUs"
	echo "server: --log-level warn --mail-dispatcher=false --rate-limits=false${BENCH_SERVE_FLAGS:+ $BENCH_SERVE_FLAGS}${LIMITS_NOTE}; every request invites a new email; $PG_NOTE"
	echo "$QUIET_NOTE"
	echo
	bl_rps=$(col baseline 3 | median)
	bl_cpu=$(col baseline 6 | median)
	fl_rps=$(col floor 3 | median)
	fl_p99=$(col floor 5 | median)
	mem_rps=$(col sqlite+limits 3 | median)
	printf '%-13s %9s %8s %8s %11s %7s %7s %8s %10s %15s %4s\n' target "req/s" "p50 ms" "p99 ms" "CPU us/req" errors "x bare" "x floor" "p99/floor" goal met
	for name in "${TARGETS[@]}"; do
		rps=$(col "$name" 3 | median)
		p50=$(col "$name" 4 | median)
		p99=$(col "$name" 5 | median)
		cpu=$(col "$name" 6 | median)
		errs=$(col "$name" 7 | awk '{s += $1} END {print s + 0}')
		# Goals: the invite against the floor (rps and p99); shared limits
		# against in-memory limits.
		awk -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$cpu" -v e="$errs" -v br="$bl_rps" \
			-v fr="$fl_rps" -v fp="$fl_p99" -v mr="$mem_rps" 'BEGIN {
			bare = (br > 0 ? r / br : 0); floor = (fr > 0 ? r / fr : 0); tail = (fp > 0 ? b / fp : 0)
			goal = "-"; met = "-"
			if (n == "sqlite" || n == "postgres") {
				min = (n == "sqlite" ? 0.75 : 0.55)
				goal = sprintf(">=%.2f floor", min)
				met = (floor >= min && tail <= 2 && e == 0 ? "yes" : "NO")
			} else if (n == "sqlite+redis") {
				x = (mr > 0 ? r / mr : 0)
				goal = sprintf("%.2f>=0.90 mem", x)
				met = (x >= 0.90 && e == 0 ? "yes" : "NO")
			}
			printf "%-13s %9.0f %8.2f %8.2f %11.1f %7d %7.3f %8s %10s %15s %4s\n", n, r, a, b, c, e, bare,
				(n == "baseline" ? "-" : sprintf("%.3f", floor)), (n == "baseline" ? "-" : sprintf("%.2f", tail)), goal, met }'
	done
	echo
	echo "medians over rounds; errors = socket errors + non-2xx, summed over rounds; x bare, x floor = req/s median / the baseline's, the floor's median of this run; p99/floor = p99 median / the floor's; CPU = utime+stime of the server process per request"
	echo "goals (docs/contributing/benchmarks.md): sqlite >= 0.75 and postgres >= 0.55 x floor, p99 at most 2x the floor's, no errors; sqlite+redis (shared limits) >= 0.90x sqlite+limits (in memory; the goal column shows the ratio), no errors; x bare is information"
	# The baseline's cost is nearly all the kernel's loopback networking,
	# which this VM's host sometimes makes half as expensive; the server's
	# Go and SQLite work does not get cheaper in proportion, so every
	# build's ratio reads lower then (docs/contributing/benchmarks.md).
	awk -v c="$bl_cpu" 'BEGIN { if (c > 0 && c < 20) printf "note: the baseline used %.1f us of CPU per request (under 20): the VM is in its fast state, where every build reads lower ratios (docs/contributing/benchmarks.md); compare CPU per request and A/B pairs, not ratios across runs\n", c }'
}

# --- scale: cost that does not grow with the data ------------------------
[ "$SCALE" = 0 ] && exit 0
SCALE_RESULTS="$TMP/scale.tsv"
: >"$SCALE_RESULTS"
RSS_NOTE=${RSS_NOTE:-}
SCALE_DBS=()
declare -A ADMIN_TOKEN INVITEE_TOKEN ENTRIES NOT_MEASURED DEEP_PATH

# start_scale_server DB DSN [--db DSN]: seeds DSN (bench/seed), makes the
# tokens and serves it as server DB-scale.
start_scale_server() {
	local db=$1 dsn=$2 dir="$TMP/data-$1-scale"
	shift 2
	mkdir -p "$dir"
	say "bench: seeding $db (bench/seed)"
	"$TMP/seed" --db "$dsn" 2>&1 | tee -a "$TMP/$db-scale-setup.log" >&2
	ADMIN_TOKEN[$db]=$("$CP" token --data-dir "$dir" --sub bench-admin --email admin@bench.test \
		--scope "workspaces:invite workspaces:list" --ttl 2h 2>>"$TMP/$db-scale-setup.log")
	INVITEE_TOKEN[$db]=$("$CP" token --data-dir "$dir" --sub bench-invitee --email invitee@bench.test \
		--scope invitations:list --ttl 2h 2>>"$TMP/$db-scale-setup.log")
	serve "$db-scale" "$CP" "$dir" "$@"
	SCALE_DBS+=("$db")
}
start_scale_server sqlite "$TMP/data-sqlite-scale/controlplane.db"
if [ -n "$PG_DB" ]; then
	new_pg_db
	start_scale_server postgres "$PG_BENCH_DSN" --db "$PG_BENCH_DSN"
fi

# The cases, in the order of each round and of the table. small-bg is
# small with 4 more connections inviting into big meanwhile (SQLite only:
# its single writer is what a slow statement in big would block).
cases() {
	echo invite-small invite-big
	[ "$1" = sqlite ] && echo invite-small-bg
	echo users-100 users-10k users-10k-deep users-10k-all profile-1k
}

# case_args CASE DB: sets the globals c_script, c_ws, c_path, c_token and
# c_timeout for CASE against DB's server.
case_args() {
	c_script=invite.lua c_ws="" c_path="" c_token=${ADMIN_TOKEN[$2]} c_timeout=$TIMEOUT
	case $1 in
	invite-small | invite-small-bg) c_ws=small ;;
	invite-big) c_ws=big ;;
	users-100) c_script=get.lua c_ws=list100 c_path="/v0/users?limit=100" ;;
	users-10k) c_script=get.lua c_ws=list10k c_path="/v0/users?limit=100" ;;
	# page 76 of 100, among the pending invitations (set by probe)
	users-10k-deep) c_script=get.lua c_ws=list10k c_path=${DEEP_PATH[$2]:-} ;;
	# today's unpaged 10,000-entry list takes seconds with 64 in flight
	users-10k-all) c_script=get.lua c_ws=list10k c_path=/v0/users c_timeout=30s ;;
	# 64 in flight of 1,000 entries each took over 2 s before the scale work
	profile-1k) c_script=get.lua c_path=/v0/profile/invitations c_token=${INVITEE_TOKEN[$2]} c_timeout=30s ;;
	esac
}

# next_link HEADERS-FILE: the path and query of the Link rel="next" target
# in a curl -D file (empty when there is none).
next_link() {
	local u
	u=$(tr -d '\r' <"$1" | awk 'tolower($1) == "link:"' | sed -n 's/.*<\([^>]*\)>[^,]*rel="\{0,1\}next.*/\1/p' | head -n 1)
	case $u in
	http://* | https://*) u="/${u#*://*/}" ;;
	esac
	echo "$u"
}

# deep_page DB: follows rel="next" from the first page of list10k to page
# 76 and sets DEEP_PATH[DB] to it (a keyset page deep in the list).
deep_page() {
	local url=${URL[$1-scale]} path="/v0/users?limit=100" hdr="$TMP/deep-$1.hdr" page
	for page in $(seq 2 76); do
		curl -s -o /dev/null -D "$hdr" "$url$path" -H "Authorization: Bearer ${ADMIN_TOKEN[$1]}" \
			-H "X-Blaxel-Workspace: list10k" || true
		path=$(next_link "$hdr")
		[ -n "$path" ] || return 0
	done
	DEEP_PATH[$1]=$path
}

# probe CASE DB: one request of CASE; a case whose probe does not answer 200
# is not measured (NOT_MEASURED says why); a GET's entry count goes to ENTRIES.
probe() {
	local key="$2/$1" url=${URL[$2-scale]} out="$TMP/probe-$2-$1.json" hdr="$TMP/probe-$2-$1.hdr" code
	if [ "$1" = users-10k-deep ]; then
		deep_page "$2"
		if [ -z "${DEEP_PATH[$2]:-}" ]; then
			NOT_MEASURED[$key]="not measured: no rel=\"next\" Link to follow to page 76"
			say "bench: $key ${NOT_MEASURED[$key]}"
			return
		fi
	fi
	case_args "$1" "$2"
	if [ "$c_script" = invite.lua ]; then
		code=$(curl -s -o "$out" -w '%{http_code}' -X POST "$url/v0/users" -H "Authorization: Bearer $c_token" \
			-H "X-Blaxel-Workspace: $c_ws" -H "Content-Type: application/json" \
			-d "{\"email\":\"probe-$1@bench.test\"}" || true)
	else
		code=$(curl -s -o "$out" -D "$hdr" -w '%{http_code}' "$url$c_path" -H "Authorization: Bearer $c_token" \
			${c_ws:+-H "X-Blaxel-Workspace: $c_ws"} --max-time 60 || true)
	fi
	if [ "$code" != 200 ]; then
		NOT_MEASURED[$key]="not measured: probe answered HTTP $code $(head -c 120 "$out" | tr -d '\n')"
		say "bench: $key ${NOT_MEASURED[$key]}"
		return
	fi
	if [ "$c_script" = get.lua ]; then
		if command -v jq >/dev/null 2>&1; then
			ENTRIES[$key]=$(jq length "$out")
		else
			ENTRIES[$key]=$(grep -o '"expiresAt"' "$out" | wc -l)
		fi
		say "bench: $key probe: $c_path: ${ENTRIES[$key]} entries, $(wc -c <"$out") bytes, next: $(next_link "$hdr")"
	fi
}

# scale_measure CASE DB ROUND: one warm-up and measured run of CASE.
scale_measure() {
	local c=$1 db=$2 round=$3 name="$2-scale" bg=""
	case_args "$c" "$db"
	if [ "$c" = invite-small-bg ]; then
		# stopped with SIGINT, on which wrk prints its summary
		BENCH_TOKEN=$c_token BENCH_WORKSPACE=big BENCH_RUN="bg$round" \
			wrk -t1 -c4 -d1h --timeout "$TIMEOUT" -s "$ROOT/bench/invite.lua" "${URL[$name]}" >"$TMP/wrk-bg-$db-$round.txt" 2>&1 &
		bg=$!
		PIDS+=("$bg")
	fi
	BENCH_TOKEN=$c_token BENCH_WORKSPACE=$c_ws BENCH_PATH=$c_path RUN_TAG="$c-" CASE_WARMUP=$SCALE_WARMUP \
		run_case "$db/$c" "$round" "${PID[$name]}" "${URL[$name]}" "$SCALE_DURATION" "$SCALE_RESULTS" \
		wrk -t"$THREADS" -c"$CONNS" --timeout "$c_timeout" --latency -s "$ROOT/bench/$c_script"
	if [ -n "$bg" ]; then
		kill -INT "$bg" 2>/dev/null || true
		wait "$bg" 2>/dev/null || true
		say "bench: round $round $db/$c: background into big: $(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk-bg-$db-$round.txt") req/s, $(awk '/^lua_non2xx:/ {print $2}' "$TMP/wrk-bg-$db-$round.txt") non-2xx"
	fi
}

for db in "${SCALE_DBS[@]}"; do
	for c in $(cases "$db"); do probe "$c" "$db"; done
done
say "bench: ${ROUNDS} rounds of the scale cases on ${SCALE_DBS[*]} (wrk -t$THREADS -c$CONNS -d$SCALE_DURATION, warm-up $SCALE_WARMUP each)"
for round in $(seq 1 "$ROUNDS"); do
	for db in "${SCALE_DBS[@]}"; do
		for c in $(cases "$db"); do
			[ -n "${NOT_MEASURED[$db/$c]:-}" ] || scale_measure "$c" "$db" "$round"
		done
	done
done

# --- report ------------------------------------------------------
scol() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n {print $c}' "$SCALE_RESULTS"; }
label() {
	case $1 in
	invite-small) echo "invite, 1-member workspace" ;;
	invite-big) echo "invite, 20k members + 100k inv." ;;
	invite-small-bg) echo "invite 1-member, 4 conns into 20k" ;;
	users-100) echo "users?limit=100, 100 entries" ;;
	users-10k) echo "users?limit=100, 10k entries" ;;
	users-10k-deep) echo "users?limit=100, 10k, page 76" ;;
	users-10k-all) echo "users unpaged, 10k entries" ;;
	profile-1k) echo "profile/invitations, 1k entries" ;;
	esac
}
# goal CASE DB: prints "measure goal met" for CASE (a ratio to its base case
# of the same run, peak RSS, or invitations/s), "- - -" for a base case.
goal() {
	local key="$2/$1" rps base="" brps min
	rps=$(scol "$key" 3 | median)
	case $1 in
	invite-big | invite-small-bg) base=invite-small min=0.9 ;;
	users-10k | users-10k-deep) base=users-100 min=0.8 ;;
	users-10k-all)
		scol "$key" 9 | sort -g | head -n 1 | awk '{mb = $1 / 1024; printf "%.0fMB <100MB %s\n", mb, (mb < 100 ? "yes" : "NO")}'
		return ;;
	profile-1k)
		awk -v r="$rps" -v n="${ENTRIES[$key]:-0}" 'BEGIN {v = r * n; printf "%.0f/s >=50000/s %s\n", v, (v >= 50000 ? "yes" : "NO")}'
		return ;;
	*) echo "- - -"; return ;;
	esac
	if [ -n "${NOT_MEASURED[$2/$base]:-}" ]; then echo "n/a >=${min}x n/a"; return; fi
	brps=$(scol "$2/$base" 3 | median)
	awk -v r="$rps" -v b="$brps" -v m="$min" 'BEGIN {x = (b > 0 ? r / b : 0); printf "%.2fx >=%.1fx %s\n", x, m, (x >= m ? "yes" : "NO")}'
}
{
	echo
	echo "scale cases (cost that does not grow with the data): wrk -t$THREADS -c$CONNS -d$SCALE_DURATION --timeout $TIMEOUT (30s for the unpaged list and my invitations) (+ $SCALE_WARMUP warm-up), $ROUNDS interleaved rounds, same serve flags, data seeded by bench/seed"
	printf '%-34s %-8s %8s %8s %9s %6s %7s %10s %10s %5s\n' case db "req/s" "p50 ms" "p99 ms" errors "RSS MB" measure goal met
	for db in "${SCALE_DBS[@]}"; do
		for c in $(cases "$db"); do
			key="$db/$c"
			if [ -n "${NOT_MEASURED[$key]:-}" ]; then
				printf '%-34s %-8s %s\n' "$(label "$c")" "$db" "${NOT_MEASURED[$key]}"
				continue
			fi
			read -r m g ok < <(goal "$c" "$db")
			errs=$(scol "$key" 7 | awk '{s += $1} END {print s + 0}')
			[ "$errs" -gt 0 ] && [ "$ok" = yes ] && ok="NO(errors)"
			awk -v l="$(label "$c")" -v d="$db" -v r="$(scol "$key" 3 | median)" -v a="$(scol "$key" 4 | median)" \
				-v b="$(scol "$key" 5 | median)" -v e="$errs" -v h="$(scol "$key" 9 | sort -g | head -n 1)" \
				-v m="$m" -v g="$g" -v ok="$ok" 'BEGIN {
				printf "%-34s %-8s %8.0f %8.2f %9.2f %6d %7.0f %10s %10s %5s\n", l, d, r, a, b, e, h / 1024, m, g, ok }'
		done
	done
	echo
	echo "medians over rounds; errors summed over rounds; RSS MB = lowest over the rounds of the server's peak RSS (VmHWM) during the case: a round's peak also counts memory the server still holds from the cases before it$RSS_NOTE; measure = ratio of median req/s to the case above it (20k invite and 4-conn load: to the 1-member invite; 10k pages: to the 100-entry page), peak RSS, or req/s x entries per response; the 4 background connections into 20k share the server's CPUs with the 64 measured ones"
}
