#!/usr/bin/env bash
# Profiles one benchmark variant's backends with perf, against the cluster a
# previous `BENCH_KEEP=1 bash tests/bench/run.sh` (or bench.sh) left running:
#
#   BENCH_KEEP=1 BENCH_ONLY=none BENCH_QUICK=1 BENCH_LARGE_ROWS=1000000 bash tests/bench/run.sh
#   bash tests/bench/profile.sh hot_ext          # or hot_floor, get_ext, list_ext, cold_ext, ...
#
# Runs pgbench (as bench.sh does) and samples both backends with
# `perf record -e cpu-clock --call-graph dwarf` over the run's CPU window
# (about SECONDS, default 6). Prints the server CPU per transaction, then where it goes
# (perf_breakdown.py), then the top symbols. Needs perf (linux-perf) and a
# kernel that allows it (perf_event_paranoid <= 2 as root is enough).
source "$(dirname "$0")/../lib.sh"
BENCH=$ROOT/tests/bench
variant=${1:?usage: profile.sh VARIANT [SECONDS]}; secs=${2:-6}
PORT=${BENCH_PORT:-$PORT_BENCH}
PGBIN=$SCRATCH/bench-pgroot$("$PG_CONFIG" --bindir)
export PGHOST=$SCRATCH/bench PGPORT=$PORT PGUSER=postgres
[ -f "$SCRATCH/bench/data/postmaster.pid" ] || { echo "no benchmark cluster: run with BENCH_KEEP=1 first" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf not found (apt-get install -y linux-perf)" >&2; exit 1; }
# shellcheck source=/dev/null  # written by bench.sh
source "$SCRATCH/bench-out/rows.env"   # the row counts bench.sh loaded, the deep listing cursor
PGBENCH_DEFINES=(-D "deep=${DEEP:-}" -D "big_org=${BIG_ORG:-}" -D "big_project=${BIG_PROJECT:-}")
case $variant in
  *_small|mint_*) db=apollo_bench_small rows=$SMALL ;;
  *) db=apollo_bench_large rows=$LARGE ;;
esac
script=${variant%_small}
OUT=$SCRATCH/bench-out; CLIENTS=2; PGDATA_DIR=$SCRATCH/bench/data
die() { echo "profile: ERROR: $*" >&2; exit 1; }
# shellcheck source=cpu.sh
source "$BENCH/cpu.sh"
out=$OUT/profile-$variant
# perf samples the backends for the whole CPU window of the run (see cpu.sh);
# run_pgbench evals the hook, so its expansions wait until then.
# shellcheck disable=SC2016
hook='perf record -q -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$(echo $pids | tr " " ,)" -o "$out.data" -- sleep $((e - s)) >/dev/null 2>&1 &'
read -r tps us window <<<"$(run_pgbench "$variant" $((secs + 2)) "$db" "$rows" "$BENCH/scripts/$script.sql" "$hook")"
sleep 1
echo "$variant on $db ($rows rows): $tps tps, $us us server CPU per transaction over ${window}s (perf attached, so both are somewhat worse than in bench.sh)"
echo
perf script -i "$out.data" 2>/dev/null >"$out.txt"
python3 "$BENCH/perf_breakdown.py" "$out.txt" "$us"
echo
perf report -i "$out.data" --no-children --stdio --sort dso,sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25
