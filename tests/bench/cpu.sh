# shellcheck shell=bash
# Server CPU per transaction for a pgbench run: sourced by bench.sh and
# profile.sh (needs PGBIN, OUT, CLIENTS, die).
#
# How: pgbench writes per-second aggregate logs (--aggregate-interval=1; the
# intervals are whole epoch seconds), and at two whole-second instants s < e
# inside the run the backends serving it (children of the postmaster
# connected to the database) have their user+system time read from
# /proc/<pid>/stat. CPU per transaction = CPU(e) - CPU(s) over the
# transactions logged in the intervals [s, e). Unlike tps this barely moves
# when other processes compete for the cores, and it leaves the client out.
# (The postmaster's cutime, the CPU of reaped children, is not used: on this
# kind of VM kernel it was seen to lose whole backends' CPU.)

CPU_TICK=$(getconf CLK_TCK)
CPU_PM=

now() { date +%s.%N; }
sleep_until() { local d; d=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; print (d > 0) ? d : 0 }'); sleep "$d"; }
backend_pids() {  # backend_pids DB: client backends connected to DB
  ps --ppid "$CPU_PM" -o pid=,args= | awk -v db=" $1 " 'index($0, db) && !/autovacuum/ { print $1 }'
}
pids_ticks() {  # pids_ticks "PID...": user+system clock ticks of those processes
  local p files=()
  for p in $1; do files+=("/proc/$p/stat"); done
  { [ ${#files[@]} -gt 0 ] && awk '{ s += $14 + $15 } END { print s + 0 }' "${files[@]}" 2>/dev/null; } || echo 0
}

# run_pgbench LABEL SECONDS DB ROWS SCRIPT [on_window_start_cmd] -> "tps cpu_us_per_tx window_s"
# cpu is "nan" when the run is too short for a window of >= 1 s. pgbench gets
# -D rows=ROWS plus the array PGBENCH_DEFINES (e.g. -D deep=<job id>), if set.
run_pgbench() {
  local label=$1 secs=$2 db=$3 rows=$4 script=$5 hook=${6:-}
  local dir=$OUT/pgbench-agg log=$OUT/pgbench.log launch s e pids t0 t1 bp tps txns cpu
  CPU_PM=$(head -1 "$PGDATA_DIR/postmaster.pid")
  rm -rf "$dir"; mkdir -p "$dir"
  launch=$(now)
  (cd "$dir" && exec "$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$secs" \
      -D rows="$rows" ${PGBENCH_DEFINES[@]+"${PGBENCH_DEFINES[@]}"} -l --aggregate-interval=1 --log-prefix=agg -f "$script" "$db") >"$log" 2>&1 &
  bp=$!
  s=$(awk -v l="$launch" 'BEGIN { x = l + 0.7; printf "%d", (x == int(x)) ? x : int(x) + 1 }')
  e=$(awk -v l="$launch" -v t="$secs" 'BEGIN { printf "%d", int(l + t - 0.2) }')
  cpu=nan
  if [ "$e" -gt "$s" ]; then
    sleep_until "$s.000" ; pids=$(backend_pids "$db"); t0=$(pids_ticks "$pids")
    [ -z "$hook" ] || eval "$hook"
    sleep_until "$e.000"; t1=$(pids_ticks "$pids")
  fi
  wait "$bp" || { cat "$log" >&2; die "pgbench $label failed"; }
  grep -q aborted "$log" && { cat "$log" >&2; die "pgbench $label aborted"; }
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")
  [ -n "$tps" ] || { cat "$log" >&2; die "no tps from pgbench $label"; }
  if [ "$e" -gt "$s" ] && [ -n "$pids" ]; then
    txns=$(cat "$dir"/agg.* | awk -v s="$s" -v e="$e" '$1 >= s && $1 < e { n += $2 } END { print n + 0 }')
    cpu=$(awk -v d=$((t1 - t0)) -v t="$CPU_TICK" -v n="$txns" 'BEGIN { if (n > 0 && d > 0) printf "%.2f", d / t * 1e6 / n; else print "nan" }')
  fi
  rm -rf "$dir"
  echo "$tps $cpu $((e - s))"
}
