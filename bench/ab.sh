#!/usr/bin/env bash
# A/B load benchmark of the invite path, run by `make bench-ab BASE=<commit>`:
# bash bench/ab.sh [BASE], BASE a commit [HEAD].
#
# Builds BASE from a temporary git worktree ("base") and the work tree as it
# is, uncommitted changes included ("head"). Then for SQLite, and for
# PostgreSQL when it answers, starts both builds at once on fresh data (the
# setup of `make bench`'s invite case: workspace "bench", an admin token,
# bench/invite.lua inviting a new email per request; the same serve flags)
# and runs BENCH_AB_PAIRS pairs of wrk runs, alternating which build goes
# first (base, head; head, base; ...), so that drift in the machine's speed
# falls on both sides alike. Each run has its own warm-up.
#
# A busy or noisy VM moves every absolute number between runs, but much
# less the ratio of two runs a few seconds apart; so the verdict is the
# median of the per-pair ratios head/base, with their spread.
#
# Prints per database the medians of req/s, p99 and server CPU per request
# of each build, the per-pair ratios (median, min-max) and "head is at X×
# base (goal ≥ 0.97)". The goal is informational: the exit status is 0
# whether it is met or not, non-zero only when the benchmark cannot run
# (a build fails, a server does not start, or a run has more than
# BENCH_AB_MAX_ERROR_PCT% errors).
#
# Environment (defaults in brackets):
#   BENCH_AB_PAIRS [6]     BENCH_DURATION [6s]      BENCH_CONNECTIONS [64]
#   BENCH_THREADS [2]      BENCH_WARMUP [2s]        BENCH_TIMEOUT [2s] (wrk --timeout)
#   BENCH_POSTGRES_DSN [postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable]
#                          (admin connection; one database cp_bench_<random>
#                          per build, dropped at exit; empty skips PostgreSQL)
#   BENCH_SERVE_FLAGS      extra flags for `controlplane serve`, given to both builds
#   BENCH_AB_MAX_ERROR_PCT [1]  errors (socket + non-2xx) per run above which
#                          the run counts as failed
#   GO [go]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

BASE_REV=${1:-HEAD}
GO=${GO:-go}
PAIRS=${BENCH_AB_PAIRS:-6}
DURATION=${BENCH_DURATION:-6s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
WARMUP=${BENCH_WARMUP:-2s}
TIMEOUT=${BENCH_TIMEOUT:-2s}
PG_DSN=${BENCH_POSTGRES_DSN-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
MAX_ERROR_PCT=${BENCH_AB_MAX_ERROR_PCT:-1}
GOAL=0.97

case $PAIRS in '' | *[!0-9]* | 0) say "bench-ab: BENCH_AB_PAIRS must be a positive integer, got '$PAIRS'"; exit 2 ;; esac
# The first run of a pair can be favoured (measured: by up to 10% on a busy
# VM); an even count gives each build the first place equally often.
[ $((PAIRS % 2)) = 1 ] && say "bench-ab: BENCH_AB_PAIRS=$PAIRS is odd: base goes first once more than head"
BASE_SHA=$(git rev-parse --verify --quiet "$BASE_REV^{commit}") || { say "bench-ab: BASE=$BASE_REV is not a commit"; exit 2; }
# label COMMIT: short hash and the subject, cut to fit a line.
label() { git log -1 --format='%h %s' "$1" | awk '{print (length($0) > 70 ? substr($0, 1, 67) "..." : $0)}'; }
BASE_LABEL=$(label "$BASE_SHA")
HEAD_LABEL=$(label HEAD)
[ -n "$(git status --porcelain)" ] && HEAD_LABEL="$HEAD_LABEL + uncommitted changes"
START=$SECONDS

need_wrk
bench_tmp cp-bench-ab
machine_busy

# --- build -------------------------------------------------------------------
# The base's sources live in a worktree only as long as its build; the trap
# removes it too when the build fails or is interrupted.
SRC="$TMP/base-src"
bench_on_exit() {
	if [ -e "$SRC" ]; then
		git worktree remove --force "$SRC" || say "bench-ab: could not remove the worktree $SRC"
	fi
	git worktree prune || true
}
say "bench-ab: base $BASE_LABEL"
say "bench-ab: head $HEAD_LABEL"
say "bench-ab: building base and head into $TMP"
git worktree add --detach --quiet "$SRC" "$BASE_SHA"
(cd "$SRC" && "$GO" build -o "$TMP/base" .) >"$TMP/build-base.log" 2>&1 || { say "bench-ab: building base ($BASE_REV) failed"; exit 1; }
bench_on_exit
"$GO" build -o "$TMP/head" . >"$TMP/build-head.log" 2>&1 || { say "bench-ab: building the work tree failed"; exit 1; }
declare -A BIN=([base]="$TMP/base" [head]="$TMP/head")

# --- load ------------------------------------------------------------------
WRK=(wrk -t"$THREADS" -c"$CONNS" --timeout "$TIMEOUT" --latency -s "$ROOT/bench/invite.lua")
RESULTS="$TMP/results.tsv" # db, side, pair, req/s, p99 ms, CPU us/req, errors, requests
: >"$RESULTS"

# measure DB SIDE PAIR: warm-up, then one measured run against server
# DB-SIDE; appends its row to RESULTS.
measure() {
	local db=$1 side=$2 pair=$3 name="$1-$2" out t0 t1 stats reqs rps p50 p99 errs cpu
	local pid=${PID[$name]} url=${URL[$name]}
	out="$TMP/wrk-$name-$pair.txt"
	case $WARMUP in 0 | 0s) ;; *)
		BENCH_TOKEN=${TOKEN[$name]} BENCH_RUN="w$pair" "${WRK[@]}" -d"$WARMUP" "$url" >"$TMP/warm-$name-$pair.txt" 2>&1 ||
			{ say "bench-ab: wrk failed (warm-up of $name, pair $pair):"; cat "$TMP/warm-$name-$pair.txt" >&2; exit 1; } ;;
	esac
	t0=$(cpu_ticks "$pid")
	BENCH_TOKEN=${TOKEN[$name]} BENCH_RUN="r$pair" "${WRK[@]}" -d"$DURATION" "$url" >"$out" 2>&1 ||
		{ say "bench-ab: wrk failed ($name, pair $pair):"; cat "$out" >&2; exit 1; }
	t1=$(cpu_ticks "$pid")
	kill -0 "$pid" 2>/dev/null || { say "bench-ab: $name died during pair $pair"; exit 1; }
	stats=$(wrk_stats "$out")
	read -r reqs rps p50 p99 errs <<<"$stats"
	cpu=$(cpu_us_per_req $((t1 - t0)) "$reqs")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$db" "$side" "$pair" "$rps" "$p99" "$cpu" "$errs" "$reqs" >>"$RESULTS"
	say "bench-ab: $db pair $pair $side: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu us CPU/req, $errs errors ($reqs requests)"
	if [ "$reqs" -eq 0 ] || [ $((errs * 100)) -gt $((reqs * MAX_ERROR_PCT)) ]; then
		say "bench-ab: $name: $errs errors in $reqs requests (more than $MAX_ERROR_PCT%); the comparison would be meaningless:"
		grep -E 'non-2xx|Socket errors' "$out" | head -n 4 >&2 || true
		exit 1
	fi
}

# bench_db DB [--db]: starts both builds on DB (fresh SQLite data dirs, or
# with --db one fresh PostgreSQL database each), runs the pairs, stops them.
DBS=()
bench_db() {
	local db=$1 side pair order
	for side in base head; do
		if [ "${2:-}" = --db ]; then
			new_pg_db
			say "bench-ab: starting $side on PostgreSQL ($PG_DB)"
			start_invite_server "$db-$side" "${BIN[$side]}" --db "$PG_BENCH_DSN"
		else
			say "bench-ab: starting $side on SQLite"
			start_invite_server "$db-$side" "${BIN[$side]}"
		fi
	done
	say "bench-ab: $db: $PAIRS pairs (wrk -t$THREADS -c$CONNS -d$DURATION, warm-up $WARMUP each)"
	for pair in $(seq 1 "$PAIRS"); do
		order="base head"
		[ $((pair % 2)) = 0 ] && order="head base"
		for side in $order; do measure "$db" "$side" "$pair"; done
	done
	stop_server "$db-base"
	stop_server "$db-head"
	DBS+=("$db")
}

bench_db sqlite
pg_admin "$PG_DSN"
if [ -n "$PG_ADMIN" ]; then
	bench_db postgres --db
fi
say "bench-ab: $PG_NOTE"

# --- report ------------------------------------------------------------------
col() { awk -F'\t' -v d="$1" -v s="$2" -v c="$3" '$1 == d && $2 == s {print $c}' "$RESULTS"; }
# ratios DB COLUMN: head/base of COLUMN in each pair, one a line.
ratios() {
	awk -F'\t' -v d="$1" -v c="$2" '$1 == d {v[$3, $2] = $c; p[$3] = 1}
		END {for (i in p) if (v[i, "base"] > 0) printf "%.4f\n", v[i, "head"] / v[i, "base"]}' "$RESULTS"
}
# spread: "median (min–max)" of the numbers on stdin.
spread() {
	sort -g | awk '{a[NR] = $1} END {
		m = (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)
		printf "%.3f (%.3f–%.3f)", m, a[1], a[NR] }'
}

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
	echo
	echo "make bench-ab: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, ${cpu_model:-unknown CPU}, $("$GO" env GOVERSION)"
	echo "base: $BASE_LABEL"
	echo "head: $HEAD_LABEL"
	echo "wrk -t$THREADS -c$CONNS -d$DURATION --timeout $TIMEOUT --latency (+ $WARMUP warm-up), $PAIRS pairs (base first in odd pairs, head first in even), both servers up at once, loopback, load generator on the same CPUs"
	echo "server: --log-level warn --mail-dispatcher=false --rate-limits=false${BENCH_SERVE_FLAGS:+ $BENCH_SERVE_FLAGS}; every request invites a new email; $PG_NOTE"
	echo "$QUIET_NOTE"
	for db in "${DBS[@]}"; do
		echo
		printf '%-9s %-5s %10s %9s %11s %7s\n' "$db" build "req/s" "p99 ms" "CPU us/req" errors
		for side in base head; do
			printf '%-9s %-5s %10.0f %9.2f %11.1f %7d\n' "" "$side" "$(col "$db" "$side" 4 | median)" \
				"$(col "$db" "$side" 5 | median)" "$(col "$db" "$side" 6 | median)" \
				"$(col "$db" "$side" 7 | awk '{s += $1} END {print s + 0}')"
		done
		rps=$(ratios "$db" 4 | spread)
		cpu=$(ratios "$db" 6 | spread)
		echo "head/base per pair, median (min–max): req/s $rps; CPU us/req $cpu"
		ratios "$db" 4 | sort -g | awk -v g="$GOAL" '{a[NR] = $1} END {
			r = (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)
			printf "verdict: head is at %.3f× base (goal ≥ %.2f): %s", r, g, (r >= g ? "met" : "not met")
			if (a[1] < g && r >= g) printf ", not in every pair"
			# A spread wider than twice the margin the goal allows cannot
			# tell 0.97 from 1.00.
			if (a[NR] - a[1] > 2 * (1 - g)) printf "; the pairs spread over %.0f%%: too noisy to decide, rerun on a quiet machine or with more pairs", (a[NR] - a[1]) * 100
			printf "\n" }'
	done
	echo
	echo "medians over the pairs; errors = socket errors + non-2xx, summed over the pairs; CPU = utime+stime of the server process per request; the ratios compare the two runs of one pair, a few seconds apart"
	echo "took $(((SECONDS - START) / 60))m$(((SECONDS - START) % 60))s"
}
