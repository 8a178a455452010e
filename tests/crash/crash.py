"""Crash test: acknowledged registrations survive SIGKILL of the whole server.

Each round, SESSIONS autocommit sessions run upsert load: mostly new thermos
ids, some from a small shared pool (raced by several sessions) and some
re-registrations of ids acknowledged in earlier rounds. One more session
registers ids in a transaction it never commits. Every answer a client
received is recorded as acknowledged (in autocommit mode the answer arrives
only after the commit, with synchronous_commit = on and fsync = on). Mid-load,
the postmaster is frozen (SIGSTOP), its children are listed, and the
postmaster and every child get SIGKILL; the test waits until none of them, and
no other process inside the data directory, is left. The cluster is then
started again with pg_ctl (as the postgres user, with the options in
postmaster.opts) and goes through crash recovery.

Checked after every restart:
  * the server log shows crash recovery (the kill really was a crash);
  * every acknowledged thermos id has its row, with the acknowledged job id;
  * no thermos id has two rows (counted from the heap with index scans off)
    and amcheck finds the table's b-tree indexes consistent with the heap;
  * no row for an id only registered in the never-committed transaction, and
    no row for an id no client ever sent;
  * re-registering every acknowledged id answers (the same id, created = f).
Also checked during the load: an id is never acknowledged with two job ids or
created twice. Prints the counts. Exits 1 on any failure, listing it.
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg
from psycopg.rows import tuple_row

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixture"))
from fixture import UPSERT, scopes, setup_sql  # noqa: E402  (tests/fixture/fixture.py)

ORGS, PROJECTS = scopes("org_crash", 2)
SHARED_POOL = 60
SETUP_SQL = setup_sql("amcheck")


def attributes(thermos):
    """Fixed attributes per thermos id, derived from it (so no call conflicts)."""
    h = sum(thermos.encode())
    org = ORGS[h % len(ORGS)]
    if h % 3 == 0:
        return (thermos, "org", org, None, "batch_revoke")
    return (thermos, "project", org, PROJECTS[org][(h // 3) % 2], "batch_revoke")


class Ledger:
    """What clients were told, shared by all sessions."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # thermos id -> job id
        self.created_by = {}  # thermos id -> (round, session) that got created = t
        self.sent = set()  # every thermos id ever sent
        self.in_doubt = set()  # ids whose call was cut off by the crash
        self.uncommitted = set()  # ids registered only in a never-committed transaction
        self.calls = 0
        self.creates = 0
        self.echoes = 0
        self.failures = []

    def record(self, who, thermos, job_id, created):
        with self.lock:
            self.calls += 1
            if created:
                self.creates += 1
                if thermos in self.created_by:
                    self.failures.append(
                        f"{thermos}: created = t twice ({self.created_by[thermos]} and {who})")
                self.created_by[thermos] = who
            else:
                self.echoes += 1
            prev = self.acked.setdefault(thermos, job_id)
            if prev != job_id:
                self.failures.append(f"{thermos}: acknowledged with two job ids")


class LoadSession(threading.Thread):
    def __init__(self, rnd, n, conninfo, ledger, old_ids, args):
        super().__init__(name=f"load-r{rnd}-s{n}", daemon=True)
        self.rnd, self.n, self.conninfo, self.ledger, self.args = rnd, n, conninfo, ledger, args
        self.old_ids, self.old_set = old_ids, set(old_ids)
        self.cut_off = None
        self.error = None

    def run(self):
        rng = random.Random(self.rnd * 1000 + self.n)
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, row_factory=tuple_row,
                                   application_name=f"apollo_jobs_crash_{self.n}")
        except psycopg.Error as e:
            self.error = f"connect: {e}"
            return
        i = 0
        while True:
            r = rng.random()
            if r < 0.15:
                thermos = f"wf-crash-shared-{rng.randrange(SHARED_POOL):03d}"
            elif r < 0.25 and self.old_ids:
                thermos = rng.choice(self.old_ids)
            else:
                thermos = f"wf-crash-r{self.rnd}-s{self.n:02d}-{i:06d}"
                i += 1
            with self.ledger.lock:
                self.ledger.sent.add(thermos)
            try:
                row = conn.execute(UPSERT, attributes(thermos)).fetchone()
            except psycopg.OperationalError:
                # The server went away mid-call: committed or not, nobody knows.
                with self.ledger.lock:
                    self.ledger.in_doubt.add(thermos)
                self.cut_off = thermos
                return
            except psycopg.Error as e:
                self.error = f"{thermos}: {getattr(e, 'sqlstate', None)} {e}"
                return
            if thermos in self.old_set and row[1]:
                with self.ledger.lock:
                    self.ledger.failures.append(f"{thermos}: acknowledged before the crash, created again after it")
            self.ledger.record((self.rnd, self.n), thermos, row[0], row[1])


class UncommittedSession(threading.Thread):
    """Registers ids in one transaction and holds it open until the crash."""

    def __init__(self, rnd, conninfo, ledger):
        super().__init__(name=f"uncommitted-r{rnd}", daemon=True)
        self.rnd, self.conninfo, self.ledger = rnd, conninfo, ledger
        self.ready = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = psycopg.connect(self.conninfo, autocommit=False, application_name="apollo_jobs_crash_open")
            for k in range(25):
                thermos = f"wf-crash-open-r{self.rnd}-{k:03d}"
                with self.ledger.lock:
                    self.ledger.uncommitted.add(thermos)
                    self.ledger.sent.add(thermos)
                row = conn.execute(UPSERT, attributes(thermos)).fetchone()
                if not row[1]:
                    self.error = f"{thermos}: expected created = t inside the open transaction"
            self.ready.set()
            conn.execute("SELECT pg_catalog.pg_sleep(600)")  # until the crash
            self.error = "the open transaction outlived the crash"
        except psycopg.OperationalError:
            pass
        except psycopg.Error as e:
            self.error = f"{getattr(e, 'sqlstate', None)} {e}"
        finally:
            self.ready.set()


# --- processes -----------------------------------------------------------

def proc_stat(pid):
    """(state, ppid) of a live process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[1])


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def send(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        subprocess.run(["sudo", "-n", "-u", "postgres", "kill", "-s", sig.name.removeprefix("SIG"), str(pid)],
                       check=False, capture_output=True)


def inside_datadir(datadir):
    """Processes whose working directory is the data directory (every server
    process chdirs there), or [] if that cannot be read."""
    found = []
    real = os.path.realpath(datadir)
    for pid in all_pids():
        try:
            if os.readlink(f"/proc/{pid}/cwd") == real:
                found.append(pid)
        except OSError:
            continue
    return found


def kill_server(datadir):
    """SIGKILL the postmaster and every child. Returns (postmaster pid, child pids)."""
    with open(os.path.join(datadir, "postmaster.pid")) as f:
        pm = int(f.readline())
    with open(f"/proc/{pm}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode()
    if os.path.realpath(datadir) not in cmdline and datadir not in cmdline:
        raise RuntimeError(f"pid {pm} from postmaster.pid is not this cluster's postmaster: {cmdline!r}")
    # Freeze the postmaster so it forks nothing new, then list its children.
    send(pm, signal.SIGSTOP)
    for _ in range(1000):
        st = proc_stat(pm)
        if st is None or st[0] in ("T", "t"):
            break
        time.sleep(0.001)
    children = [pid for pid in all_pids() if (proc_stat(pid) or ("", -1))[1] == pm]
    for pid in children:
        send(pid, signal.SIGKILL)
    send(pm, signal.SIGKILL)
    victims = [pm] + children
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [p for p in victims if (proc_stat(p) or ("Z",))[0] != "Z"]
        stray = [p for p in inside_datadir(datadir) if (proc_stat(p) or ("Z",))[0] != "Z"]
        if not alive and not stray:
            # A new postmaster refuses to start while the old pid still
            # exists, even as a zombie: wait for init to reap it.
            while proc_stat(pm) is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc_stat(pm) is not None:
                raise RuntimeError(f"the killed postmaster {pm} was never reaped (zombie)")
            return pm, children
        for p in stray:
            send(p, signal.SIGKILL)
        time.sleep(0.02)
    raise RuntimeError(f"server processes survived SIGKILL: {alive or stray}")


def start_server(pgbin, datadir, log):
    """pg_ctl start as postgres, with the options the killed postmaster had."""
    with open(os.path.join(datadir, "postmaster.opts")) as f:
        opts = f.read().strip()
    # postmaster.opts: the binary, then its arguments, each double-quoted;
    # drop the binary and "-D" "<dir>" (pg_ctl passes -D itself).
    args = opts.split(" ", 1)[1] if " " in opts else ""
    args = args.replace(f'"-D" "{datadir}"', "").strip()
    cmd = ["sudo", "-u", "postgres", f"{pgbin}/pg_ctl", "-D", datadir, "-l", log, "-o", args, "-w", "-t", "120", "start"]
    if os.geteuid() != 0:
        cmd = cmd[3:]
    # pg_ctl warns "another server might be running" about the stale
    # postmaster.pid the kill left behind; that is expected, so its output is
    # shown only if the start fails.
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed ({done.returncode}): {done.stdout}{done.stderr}")


# --- checks --------------------------------------------------------------

def verify(conninfo, ledger, log, log_offset, label):
    failures = []
    with open(log, errors="replace") as f:
        f.seek(log_offset)
        text = f.read()
    if "not properly shut down" not in text and "redo starts" not in text:
        failures.append(f"{label}: the server log shows no crash recovery")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Count from the heap, not through the unique index under test.
        conn.execute("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off")
        rows = conn.execute(
            "SELECT thermos_job_id, count(*), min(job_id::text) FROM apollo_jobs.jobs GROUP BY thermos_job_id"
        ).fetchall()
        conn.execute("RESET enable_indexscan; RESET enable_bitmapscan; RESET enable_indexonlyscan")
        table = {t: (n, j) for t, n, j in rows}
        doubled = [t for t, (n, _) in table.items() if n != 1]
        if doubled:
            failures.append(f"{label}: {len(doubled)} thermos ids with more than one row, e.g. {doubled[:3]}")
        for idx in ("apollo_jobs.jobs_pkey", "apollo_jobs.jobs_thermos_job_id_key"):
            try:
                conn.execute("SELECT bt_index_check(%s::regclass, true)", (idx,))
            except psycopg.Error as e:
                failures.append(f"{label}: amcheck on {idx}: {e}")
        lost = [t for t in ledger.acked if t not in table]
        changed = [t for t, j in ledger.acked.items() if t in table and table[t][1] != j]
        if lost:
            failures.append(f"{label}: {len(lost)} acknowledged ids lost, e.g. {lost[:3]}")
        if changed:
            failures.append(f"{label}: {len(changed)} acknowledged ids with another job id, e.g. {changed[:3]}")
        ghosts = [t for t in ledger.uncommitted if t in table]
        if ghosts:
            failures.append(f"{label}: {len(ghosts)} rows from the never-committed transaction, e.g. {ghosts[:3]}")
        unknown = [t for t in table if t not in ledger.sent]
        if unknown:
            failures.append(f"{label}: {len(unknown)} rows for ids never sent, e.g. {unknown[:3]}")
        # Every acknowledged id echoes.
        not_echoed = 0
        with conn.cursor() as cur:
            for t, j in ledger.acked.items():
                cur.execute(UPSERT, attributes(t))
                job_id, created = cur.fetchone()
                not_echoed += created or job_id != j
        if not_echoed:
            failures.append(f"{label}: {not_echoed} acknowledged ids did not echo (same id, created = f)")
    in_doubt_present = sum(1 for t in ledger.in_doubt if t in table and t not in ledger.acked)
    in_doubt_only = sum(1 for t in ledger.in_doubt if t not in ledger.acked)
    return failures, len(table), in_doubt_present, in_doubt_only


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datadir", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pgbin", required=True)
    p.add_argument("--dbname", default="apollo_jobs_crash")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--min-load", type=float, default=1.5, help="seconds of load before the kill, at least")
    p.add_argument("--max-load", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    conninfo = f"dbname={args.dbname}"

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SETUP_SQL)
        for org in ORGS:
            conn.execute("INSERT INTO public.orgs VALUES (%s)", (org,))
            for prj in PROJECTS[org]:
                conn.execute("INSERT INTO public.projects VALUES (%s, %s)", (prj, org))

    print(f"crash: {args.rounds} rounds of {args.sessions} autocommit sessions + 1 never-committed transaction, "
          f"SIGKILL of the postmaster and all children after {args.min_load}-{args.max_load}s (seed {seed})")
    ledger = Ledger()
    failures = []
    for rnd in range(1, args.rounds + 1):
        old_ids = list(ledger.acked)
        acked_before, calls_before = len(ledger.acked), ledger.calls
        opener = UncommittedSession(rnd, conninfo, ledger)
        opener.start()
        opener.ready.wait(30)
        sessions = [LoadSession(rnd, n, conninfo, ledger, old_ids, args) for n in range(args.sessions)]
        for s in sessions:
            s.start()
        load = rng.uniform(args.min_load, args.max_load)
        checkpoint_at = rng.uniform(0.2, load - 0.2) if rnd % 2 == 0 else None
        t0 = time.monotonic()
        if checkpoint_at is not None:
            time.sleep(checkpoint_at)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
        time.sleep(max(0.0, load - (time.monotonic() - t0)))
        calls_at_kill = ledger.calls
        time.sleep(0.05)
        if ledger.calls == calls_at_kill:
            failures.append(f"round {rnd}: no call completed in the 50 ms before the kill (load stalled?)")
        with open(args.log, "rb") as f:
            log_offset = f.seek(0, 2)
        try:
            pm, children = kill_server(args.datadir)
        except RuntimeError as e:
            print(f"crash: FAILED: {e}")
            return 1
        for s in sessions:
            s.join(30)
        opener.join(30)
        stuck = [s.name for s in sessions + [opener] if s.is_alive()]
        errs = [f"{s.name}: {s.error}" for s in sessions + [opener] if s.error]
        if stuck:
            failures.append(f"round {rnd}: sessions did not notice the crash: {stuck}")
        if errs:
            failures.append(f"round {rnd}: session errors: {errs[:5]}")
        cut = sum(1 for s in sessions if s.cut_off)
        restart_t0 = time.monotonic()
        try:
            start_server(args.pgbin, args.datadir, args.log)
        except RuntimeError as e:
            print(f"crash: FAILED: round {rnd}: {e}")
            return 1
        restart_s = time.monotonic() - restart_t0
        fails, rows, doubt_present, doubt_total = verify(conninfo, ledger, args.log, log_offset, f"round {rnd}")
        failures += fails
        ckpt = f" with a CHECKPOINT at {checkpoint_at:.1f}s" if checkpoint_at is not None else ""
        print(f"round {rnd}: {load:.1f}s load{ckpt}; killed postmaster {pm} and {len(children)} children; "
              f"{ledger.calls - calls_before} calls acknowledged ({len(ledger.acked) - acked_before} new ids), "
              f"{cut} calls cut off; restart + recovery {restart_s:.1f}s", flush=True)
        if fails:
            print(f"round {rnd}: after recovery: verification FAILED", flush=True)
        else:
            print(f"round {rnd}: after recovery: {rows} rows; all {len(ledger.acked)} acknowledged ids present "
                  f"with their job id and echo; no duplicates; {doubt_present} of {doubt_total} cut-off "
                  f"(never acknowledged) ids present; 0 of {len(ledger.uncommitted)} never-committed ids present",
                  flush=True)
    failures += ledger.failures
    print(f"crash: totals: {ledger.calls} acknowledged calls ({ledger.creates} created, {ledger.echoes} echoes), "
          f"{len(ledger.acked)} distinct acknowledged ids, {len(ledger.in_doubt)} calls cut off by the kills")
    if failures:
        print("crash: FAILED")
        for f in failures:
            print(f"  {f}")
        return 1
    print("crash: ok (every acknowledged id survived with its job id, no duplicates, indexes consistent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
