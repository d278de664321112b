# Shell helpers of the load benchmarks, sourced by bench/run.sh (`make
# bench`) and bench/ab.sh (`make bench-ab`). Callers run under `set -euo
# pipefail` from the module root; a helper that cannot go on exits the
# script, and the exit trap (bench_tmp) stops what was started.
#
# State the helpers share with their caller (globals):
#   TMP                the run's temporary directory, removed at exit
#   PIDS               processes killed at exit (servers, background wrk)
#   PG_ADMIN, PG_DBS   admin DSN and the databases dropped at exit
#   URL, PID, TOKEN    per invite server (keyed by its name): base URL,
#                      process id, bearer token for bench/invite.lua
#   SERVE_EXTRA        extra `serve` flags (BENCH_SERVE_FLAGS, split on spaces)
#   SERVE_ONLY         more `serve` flags for the next start_invite_server
#                      only (flags the setup commands do not take)
# A caller that has more to undo at exit defines bench_on_exit; the trap
# calls it after the servers are stopped and before TMP is removed.

PIDS=()
PG_DBS=()
PG_ADMIN=""
SERVE_ONLY=()
declare -A URL PID TOKEN
read -r -a SERVE_EXTRA <<<"${BENCH_SERVE_FLAGS:-}"

say() { printf '%s\n' "$*" >&2; }

# need_wrk: installs wrk through apt-get when it is missing and we are root
# (the benchmark machine is a throwaway VM), else says how to.
need_wrk() {
	command -v wrk >/dev/null 2>&1 && return
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "bench: installing wrk (apt-get install -y wrk)"
		apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null; }
	else
		say "bench: wrk not found; install it (Debian/Ubuntu: sudo apt-get install wrk) and rerun"
		exit 1
	fi
}

# bench_tmp NAME: creates TMP and installs the exit trap that kills PIDS,
# drops PG_DBS, calls bench_on_exit when defined, shows the tails of the
# logs in TMP when the script fails, and removes TMP.
bench_tmp() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

bench_cleanup() {
	local rc=$? pid db f
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	for db in "${PG_DBS[@]}"; do
		psql "$PG_ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 ||
			say "bench: could not drop database $db"
	done
	if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
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

# free_port: a port nobody listens on, below the kernel's range of
# ephemeral ports (32768 on Linux), so that the clients of whatever else
# runs on the machine (tests connecting to PostgreSQL by the thousand) do
# not take it between this check and the server's bind.
free_port() {
	local p low first=10000 span
	read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
	span=$((low - first))
	# a machine whose ephemeral ports start low leaves no such room
	[ "$span" -gt 1000 ] || { first=20000 span=40000; }
	for _ in $(seq 1 100); do
		p=$((first + RANDOM % span))
		if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	say "bench: no free port found"
	exit 1
}

# await_ready URL PID: waits up to 30 s until GET URL answers 200; returns
# 0 then, 1 when PID exits first, 2 when time runs out.
await_ready() {
	local url=$1 pid=$2 code
	for _ in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || return 1
		code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
		[ "$code" = 200 ] && return 0
		sleep 0.1
	done
	return 2
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

# cpu_us_per_req TICKS REQUESTS: server CPU per request in microseconds.
cpu_us_per_req() {
	awk -v d="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN {printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0)}'
}

# to_ms VALUE: wrk latency like 812.00us, 1.23ms, 2.01s, 1.00m -> milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}

# wrk_stats FILE: from the output of `wrk --latency` (with bench/invite.lua
# or get.lua) prints "requests req/s p50-ms p99-ms errors", errors being
# socket errors plus non-2xx answers (the larger of wrk's count and the
# script's lua_non2xx). Exits when the output has no summary.
wrk_stats() {
	local out=$1 reqs rps p50 p99 sock non2xx lua
	reqs=$(awk '/requests in/ {print $1; exit}' "$out")
	rps=$(awk '/^Requests\/sec:/ {print $2; exit}' "$out")
	p50=$(awk '$1 == "50%" {print $2; exit}' "$out")
	p99=$(awk '$1 == "99%" {print $2; exit}' "$out")
	if [ -z "$reqs" ] || [ -z "$rps" ] || [ -z "$p50" ] || [ -z "$p99" ]; then
		say "bench: could not parse wrk output $out:"
		cat "$out" >&2
		exit 1
	fi
	sock=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10; exit}' "$out")
	non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$out")
	lua=$(awk '/^lua_non2xx:/ {print $2; exit}' "$out")
	sock=${sock:-0} non2xx=${non2xx:-0} lua=${lua:-0}
	[ "$lua" -gt "$non2xx" ] && non2xx=$lua
	echo "$reqs $rps $(to_ms "$p50") $(to_ms "$p99") $((sock + non2xx))"
}

# median: the median of the numbers on stdin, one a line (0 when none).
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# machine_busy: measures for a second how busy the CPUs are before the run
# (the load generator and the servers share them, so anything else running
# skews every number) and sets QUIET_NOTE for the report; names the busiest
# processes when it is 10% or more.
machine_busy() {
	local i0 a0 i1 a1 busy
	read -r i0 a0 < <(cpu_idle_ticks)
	sleep 1
	read -r i1 a1 < <(cpu_idle_ticks)
	busy=$(awk -v i=$((i1 - i0)) -v a=$((a1 - a0)) 'BEGIN {printf "%.0f", (a > 0 ? 100 - i * 100 / a : 0)}')
	QUIET_NOTE="machine ${busy}% busy before the run"
	if [ "$busy" -ge 10 ]; then
		QUIET_NOTE="$QUIET_NOTE (NOT quiet: the numbers are noise)"
		say "bench: the machine is ${busy}% busy before the run; other processes skew every number. Busiest:"
		ps -eo pid,pcpu,args --sort=-pcpu | head -n 6 | cut -c1-150 >&2 || true
	fi
}
# cpu_idle_ticks: "idle total" jiffies over all CPUs (idle + iowait).
cpu_idle_ticks() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# pg_admin DSN: sets PG_ADMIN to DSN when PostgreSQL answers there (else
# leaves it empty) and PG_NOTE to what was found, for the report.
pg_admin() {
	if [ -z "$1" ]; then
		PG_NOTE="postgres: skipped (BENCH_POSTGRES_DSN empty)"
	elif ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
		PG_NOTE="postgres: skipped (psql/pg_isready not installed)"
	elif ! pg_isready -q -d "$1" || ! psql "$1" -qAtX -c 'select 1' >/dev/null 2>&1; then
		PG_NOTE="postgres: skipped (cannot connect to $1)"
	else
		PG_ADMIN=$1
		PG_NOTE="postgres: $(psql "$PG_ADMIN" -qAtX -c 'show server_version')"
	fi
}

# new_pg_db: creates a database cp_bench_<random> through PG_ADMIN (dropped
# at exit); sets PG_DB to its name and PG_BENCH_DSN to its URL.
new_pg_db() {
	local base query hostpart scheme
	PG_DB="cp_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
	psql "$PG_ADMIN" -qAtX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null
	PG_DBS+=("$PG_DB")
	base=${PG_ADMIN%%\?*}
	query=""
	[ "$base" != "$PG_ADMIN" ] && query="?${PG_ADMIN#*\?}"
	hostpart=${base#*://}
	scheme=${base%%://*}
	hostpart=${hostpart%%/*}
	PG_BENCH_DSN="$scheme://$hostpart/$PG_DB$query"
}

# serve NAME BINARY DIR [--db DSN]: starts `BINARY serve` on DIR (log in
# TMP/NAME.log) and waits until it is ready; sets URL[NAME] and PID[NAME].
# A port taken between free_port and the bind gets two more tries on
# other ports.
serve() {
	local name=$1 bin=$2 dir=$3 port rc attempt
	shift 3
	for attempt in 1 2 3; do
		port=$(free_port)
		# --log-level warn: the info level writes an access-log line per request,
		# which would be measured too; warn keeps only problems.
		# --mail-dispatcher=false: the measured path ends with the invitation and
		# its outbox row committed; delivering the outbox is mail-worker's job.
		# --rate-limits=false: one admin inviting thousands a second is exactly
		# what the limits refuse; the benchmark measures the path behind them.
		"$bin" serve --data-dir "$dir" --addr "127.0.0.1:$port" --log-level warn --mail-dispatcher=false --rate-limits=false "$@" "${SERVE_EXTRA[@]}" \
			>"$TMP/$name.log" 2>&1 &
		PID[$name]=$!
		PIDS+=("${PID[$name]}")
		URL[$name]="http://127.0.0.1:$port"
		rc=0
		await_ready "${URL[$name]}/readyz" "${PID[$name]}" || rc=$?
		[ "$rc" = 0 ] && return
		if [ "$rc" = 1 ] && [ "$attempt" -lt 3 ] && grep -q 'address already in use' "$TMP/$name.log"; then
			say "bench: port $port was taken before $name could bind it; trying another"
			stop_server "$name"
			continue
		fi
		case $rc in
		1) say "bench: $name (process ${PID[$name]}) exited before ${URL[$name]}/readyz was ready" ;;
		*) say "bench: $name not ready at ${URL[$name]}/readyz after 30s" ;;
		esac
		exit 1
	done
}

# start_invite_server NAME BINARY [--db DSN]: the invite case's server: a
# fresh data dir, workspace "bench" with admin bench-admin, a token with
# workspaces:invite in TOKEN[NAME] (both made by BINARY itself, so each
# build sets up the data it understands), then serve (with SERVE_ONLY too)
# and one probe invite, so that a broken setup fails here and not as 100%
# errors.
start_invite_server() {
	local name=$1 bin=$2 dir="$TMP/data-$1" code
	shift 2
	mkdir -p "$dir"
	"$bin" workspace create bench --admin-sub bench-admin --admin-email admin@bench.test \
		--data-dir "$dir" "$@" >"$TMP/$name-setup.log" 2>&1
	TOKEN[$name]=$("$bin" token --data-dir "$dir" --sub bench-admin --email admin@bench.test \
		--scope workspaces:invite --ttl 2h 2>>"$TMP/$name-setup.log")
	serve "$name" "$bin" "$dir" "$@" "${SERVE_ONLY[@]}"
	code=$(curl -s -o "$TMP/$name-probe.json" -w '%{http_code}' -X POST "${URL[$name]}/v0/users" \
		-H "Authorization: Bearer ${TOKEN[$name]}" -H "X-Blaxel-Workspace: bench" \
		-H "Content-Type: application/json" -d '{"email":"probe@bench.test"}' || true)
	if [ "$code" != 200 ]; then
		say "bench: probe invite on $name answered $code: $(head -c 300 "$TMP/$name-probe.json")"
		exit 1
	fi
}

# stop_server NAME: stops server NAME and forgets its process.
stop_server() {
	local pid=${PID[$1]} keep=() p
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# start_floor NAME BINARY TOKEN: starts the spec-first floor (bench/floor)
# accepting TOKEN (the same bearer the servers get, so every target
# receives byte-for-byte the same requests) and waits until one invite
# answers 200; sets URL[NAME], PID[NAME] and TOKEN[NAME].
start_floor() {
	local name=$1 bin=$2 port code=""
	port=$(free_port)
	"$bin" -addr "127.0.0.1:$port" -spec "$ROOT/openapi/controlplane.yml" -token "$3" >"$TMP/$name.log" 2>&1 &
	PID[$name]=$!
	PIDS+=("${PID[$name]}")
	URL[$name]="http://127.0.0.1:$port"
	TOKEN[$name]=$3
	for _ in $(seq 1 300); do
		code=$(curl -s -o "$TMP/$name-probe.json" -w '%{http_code}' -X POST "${URL[$name]}/v0/users" \
			-H "Authorization: Bearer $3" -H "X-Blaxel-Workspace: bench" \
			-H "Content-Type: application/json" -d '{"email":"probe@bench.test"}' || true)
		[ "$code" = 200 ] && return
		kill -0 "${PID[$name]}" 2>/dev/null || { say "bench: $name exited"; exit 1; }
		sleep 0.1
	done
	say "bench: probe invite on $name answered $code: $(head -c 300 "$TMP/$name-probe.json")"
	exit 1
}

# redis_up URL: whether the Redis at URL (redis://host:port/db) answers PING
# (through redis-cli when installed, else a raw PING over /dev/tcp).
redis_up() {
	local hostport
	if command -v redis-cli >/dev/null 2>&1; then
		[ "$(redis-cli -u "$1" ping 2>/dev/null)" = PONG ]
		return
	fi
	hostport=${1#*://}
	hostport=${hostport##*@}
	hostport=${hostport%%/*}
	(
		exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || exit 1
		printf 'PING\r\n' >&3
		read -r -t 2 reply <&3 && [ "${reply%$'\r'}" = +PONG ]
	) 2>/dev/null
}
