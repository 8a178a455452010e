#!/usr/bin/env bash
# Profiles one benchmark variant's backends with perf, against the cluster a
# previous `BENCH_KEEP=1 bash tests/bench/run.sh` (or bench.sh) left running:
#
#   BENCH_KEEP=1 BENCH_ONLY=none BENCH_QUICK=1 BENCH_LARGE_ROWS=1000000 bash tests/bench/run.sh
#   bash tests/bench/profile.sh hot_ext          # or hot_floor, get_ext, cold_ext, ...
#
# Runs pgbench (as bench.sh does) and, after a second of warm-up, samples both
# backends with `perf record -e cpu-clock --call-graph dwarf` for SECONDS
# (default 6). Prints the server CPU per transaction, then where it goes
# (perf_breakdown.py), then the top symbols. Needs perf (linux-perf) and a
# kernel that allows it (perf_event_paranoid <= 2 as root is enough).
source "$(dirname "$0")/../lib.sh"
BENCH=$ROOT/tests/bench
variant=${1:?usage: profile.sh VARIANT [SECONDS]}; secs=${2:-6}
PORT=${BENCH_PORT:-5498}
PGBIN=$SCRATCH/bench-pgroot$("$PG_CONFIG" --bindir)
export PGHOST=$SCRATCH/bench PGPORT=$PORT PGUSER=postgres
[ -f "$SCRATCH/bench/data/postmaster.pid" ] || { echo "no benchmark cluster: run with BENCH_KEEP=1 first" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf not found (apt-get install -y linux-perf)" >&2; exit 1; }
source "$SCRATCH/bench-out/rows.env"   # the row counts bench.sh loaded
case $variant in
  hot_ext_small|mint_*) db=apollo_bench_small rows=$SMALL ;;
  *) db=apollo_bench_large rows=$LARGE ;;
esac
script=${variant%_small}
out=$SCRATCH/bench-out/profile-$variant; mkdir -p "$(dirname "$out")"
PM=$(head -1 "$SCRATCH/bench/data/postmaster.pid")
cpu() { awk '{ print $16 + $17 }' "/proc/$PM/stat"; }

c0=$(cpu)
"$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -T $((secs + 3)) -D rows="$rows" -f "$BENCH/scripts/$script.sql" "$db" >"$out.pgbench" 2>&1 &
bench=$!
sleep 1.5
pids=$("$PGBIN/psql" -X -At -d postgres -c "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE application_name = 'pgbench'")
perf record -q -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$pids" -o "$out.data" -- sleep "$secs" >/dev/null 2>&1
wait $bench
sleep 0.5
c1=$(cpu)
txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out.pgbench")
us=$(awk -v d=$((c1 - c0)) -v t="$(getconf CLK_TCK)" -v n="$txns" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
echo "$variant on $db ($rows rows): $(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out.pgbench") tps, $us us server CPU per transaction (perf attached for ${secs}s of it)"
echo
perf script -i "$out.data" 2>/dev/null >"$out.txt"
python3 "$BENCH/perf_breakdown.py" "$out.txt" "$us"
echo
perf report -i "$out.data" --no-children --stdio --sort dso,sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25
