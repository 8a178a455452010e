"""Failover test driver: no acknowledged registration is lost when the primary dies.

Two commands, run by tests/failover/run.sh around a pg_auto_failover formation
(a monitor, node 1 the primary, node 2 its synchronous standby):

load    CLIENTS threads register distinct thermos ids through the API's own
        statement (tests/clients/sql/jobs.sql, upsert_job) in autocommit mode,
        over a multi-host connection string with target_session_attrs =
        read-write. A call that answered is ACKNOWLEDGED (the answer comes
        after the commit, which synchronous replication holds until the
        standby has flushed it). A call cut off by a lost connection has an
        UNKNOWN outcome: the client reconnects with backoff and re-posts the
        same thermos id, which either echoes (it had committed) or creates it.
        After KILL_AFTER seconds node 1 is lost: its pg_autoctl (which would
        otherwise restart Postgres in place) and its postmaster are frozen,
        then they and every child of the postmaster get SIGKILL. The load goes
        on until every client has written to the new primary, then stops. On
        the new primary: every acknowledged thermos id has its row with the
        acknowledged job id, no thermos id has two rows (counted from the
        heap), no row for an id never sent, and re-posting every id sent
        (acknowledged and unknown-outcome) echoes (created = f) with the
        acknowledged job id. Also checked during the load: an id is never
        acknowledged with two job ids or created twice; no error but lost
        connections. Writes the ledger (JSON) for `replica`.

replica Once node 1 has rejoined as a standby of node 2: it has replayed
        everything, holds exactly the new primary's rows, and echoes every
        acknowledged id with its job id (a read-only call).

Prints what it measured; exits 1 listing every failure.
"""

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import psycopg

SQL_FILE = Path(__file__).resolve().parent.parent / "clients" / "sql" / "jobs.sql"
# The fixture's scopes (tests/clients/fixture/service.sql).
SCOPES = [("org", "org_acme", None), ("org", "org_umbrella", None),
          ("project", "org_acme", "prj_acme_web"), ("project", "org_umbrella", "prj_umbrella_lab")]
BACKOFF_MIN, BACKOFF_MAX = 0.05, 0.5


def api_statement(name):
    """The statement after '-- name: NAME' in jobs.sql, without its comment lines."""
    lines, inside = [], False
    for line in SQL_FILE.read_text().split("\n"):
        if line.startswith("-- name: "):
            if inside:
                break
            inside = line[len("-- name: "):].strip() == name
            continue
        if inside and (lines or not line.startswith("--")):
            lines.append(line)
    text = "\n".join(lines).strip()
    if not text:
        raise SystemExit(f"no statement {name} in {SQL_FILE}")
    return text


UPSERT = api_statement("upsert_job")


def attributes(thermos):
    """The registration's fixed attributes, derived from the thermos id."""
    cls, org, prj = SCOPES[sum(thermos.encode()) % len(SCOPES)]
    return [thermos, cls, org, prj, "batch_revoke"]


def connect(conninfo, **kw):
    return psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.RawCursor, **kw)


class Ledger:
    """What the clients were told, shared by all of them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # thermos id -> job id
        self.created = set()  # ids some client got created = t for
        self.sent = set()
        self.unknown = set()  # ids whose call was cut off (re-posted afterwards)
        self.unknown_echoed = 0  # re-posts of those that echoed: the lost answer's commit survived
        self.unknown_created = 0  # re-posts that created: the cut-off call had not committed on the standby
        self.ack_times = []  # (monotonic time of the answer, server port)
        self.fail_times = []  # monotonic times of failed calls and failed connection attempts
        self.failures = []

    def ack(self, who, thermos, job_id, created, repost, port):
        now = time.monotonic()
        with self.lock:
            self.ack_times.append((now, port))
            if created:
                if thermos in self.created:
                    self.failures.append(f"{thermos}: created = t twice (last by client {who})")
                self.created.add(thermos)
            prev = self.acked.setdefault(thermos, job_id)
            if prev != job_id:
                self.failures.append(f"{thermos}: acknowledged with two job ids ({prev}, {job_id})")
            if repost:
                if created:
                    self.unknown_created += 1
                else:
                    self.unknown_echoed += 1

    def failed(self):
        with self.lock:
            self.fail_times.append(time.monotonic())


class Client(threading.Thread):
    def __init__(self, n, conninfo, ledger, stop, hard_deadline):
        super().__init__(name=f"client-{n}", daemon=True)
        self.n, self.conninfo, self.ledger, self.stop, self.hard_deadline = n, conninfo, ledger, stop, hard_deadline
        self.error = None
        self.ports = []  # server port of every connection made, in order
        self.last_ack_port = None

    def run(self):
        conn, i, pending, backoff = None, 0, None, BACKOFF_MIN
        while True:
            if time.monotonic() > self.hard_deadline:
                self.error = f"still unfinished at the deadline (pending {pending})"
                break
            if pending is None and self.stop.is_set():
                break
            if conn is None:
                try:
                    conn = connect(self.conninfo, application_name=f"apollo_jobs_failover_{self.n}")
                    self.ports.append(conn.info.port)
                except psycopg.OperationalError:
                    self.ledger.failed()
                    time.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
            repost = pending is not None
            if repost:
                thermos = pending
            else:
                thermos = f"wf-failover-c{self.n}-{i:06d}"
                i += 1
                with self.ledger.lock:
                    self.ledger.sent.add(thermos)
            try:
                job_id, created = conn.execute(UPSERT, attributes(thermos)).fetchone()
            except psycopg.OperationalError:
                # The connection went away mid-call: committed or not, nobody knows.
                self.ledger.failed()
                with self.ledger.lock:
                    self.ledger.unknown.add(thermos)
                pending = thermos
                conn.close()
                conn = None
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except psycopg.Error as e:
                self.error = f"{thermos}: {e.sqlstate} {e}"
                break
            self.last_ack_port = conn.info.port
            self.ledger.ack(self.n, thermos, job_id, created, repost, self.last_ack_port)
            pending, backoff = None, BACKOFF_MIN
        if conn is not None:
            conn.close()


# --- killing node 1 ------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def kill_node(pgdata, autoctl_pidfile):
    """SIGKILL node 1's pg_autoctl service, its postmaster and every child.
    Returns (postmaster pid, number of processes killed)."""
    with open(autoctl_pidfile) as f:
        service = int(f.readline())
    with open(os.path.join(pgdata, "postmaster.pid")) as f:
        pm = int(f.readline())
    if "pg_autoctl" not in cmdline(service):
        raise RuntimeError(f"pid {service} from {autoctl_pidfile} is not pg_autoctl: {cmdline(service)!r}")
    if pgdata not in cmdline(pm):
        raise RuntimeError(f"pid {pm} from postmaster.pid is not node 1's postmaster: {cmdline(pm)!r}")
    # First the service and its subprocesses (the Postgres controller, which
    # would restart Postgres, and the keeper loop), then, frozen so that it
    # forks no new backend, the postmaster with every child.
    group = [p for p in pids() if (proc_stat(p) or ("", -1))[1] == service] + [service]
    for p in group:
        os.kill(p, signal.SIGKILL)
    os.kill(pm, signal.SIGSTOP)
    children = [p for p in pids() if (proc_stat(p) or ("", -1))[1] == pm]
    for p in children + [pm]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    victims = group + [pm] + children
    deadline = time.monotonic() + 15
    while any(alive(p) for p in victims):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes survived SIGKILL: {[p for p in victims if alive(p)]}")
        time.sleep(0.02)
    # A pid that still exists, even as a zombie, keeps pg_autoctl and Postgres
    # from starting again on that node: wait until both are reaped.
    while proc_stat(service) is not None or proc_stat(pm) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pg_autoctl {service} or postmaster {pm} was never reaped")
        time.sleep(0.02)
    return pm, len(victims)


# --- checks --------------------------------------------------------------------

def table_rows(conn):
    """thermos id -> (row count, job id), counted from the heap (not through
    the unique index whose guarantee is being checked)."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        conn.execute("SET LOCAL enable_indexonlyscan = off")
        rows = conn.execute("SELECT thermos_job_id, count(*), min(job_id::text) "
                            "FROM apollo_jobs.jobs GROUP BY thermos_job_id").fetchall()
    return {t: (n, j) for t, n, j in rows}


def repost_all(conn, ids):
    """Re-posts every id (pipelined); returns {thermos: (job_id, created)}."""
    answers = {}
    with conn.cursor() as cur:
        cur.executemany(UPSERT, [attributes(t) for t in ids], returning=True)
        for t in ids:
            answers[t] = cur.fetchone()
            cur.nextset()
    return answers


def sync_state(conninfo):
    """(synchronous_standby_names, synchronous_commit, [sync_state of each standby])."""
    with connect(conninfo) as conn:
        names = conn.execute("SHOW synchronous_standby_names").fetchone()[0]
        commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
        states = [r[0] for r in conn.execute("SELECT sync_state FROM pg_stat_replication").fetchall()]
    return names, commit, states


def cmd_load(args):
    failures = []
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    kill_after = rng.uniform(args.min_load, args.max_load)
    rw = (f"host=127.0.0.1,127.0.0.1 port={args.port1},{args.port2} dbname={args.dbname} "
          f"user={args.user} target_session_attrs=read-write connect_timeout=2")
    ledger, stop = Ledger(), threading.Event()
    t_start = time.monotonic()
    clients = [Client(n, rw, ledger, stop, t_start + args.deadline) for n in range(args.clients)]
    for c in clients:
        c.start()

    time.sleep(kill_after)
    first = [c.ports[0] if c.ports else None for c in clients]
    if any(p != args.port1 for p in first):
        failures.append(f"before the kill the clients' first connections went to ports {first}, not {args.port1}")
    # Synchronous replication in force at the kill: what makes "acknowledged"
    # mean "on the standby too".
    names, commit, states = sync_state(f"host=127.0.0.1 port={args.port1} dbname={args.dbname} user=postgres")
    if not names or commit not in ("on", "remote_apply") or not any(s in ("sync", "quorum") for s in states):
        failures.append(f"no synchronous standby at the kill: synchronous_standby_names = {names!r}, "
                        f"synchronous_commit = {commit}, pg_stat_replication.sync_state = {states}")
    acks_before = len(ledger.ack_times)
    time.sleep(0.05)
    if len(ledger.ack_times) == acks_before:
        failures.append("no registration answered in the 50 ms before the kill (load stalled?)")
    acked_at_kill = len(ledger.acked)
    t_kill = time.monotonic()
    try:
        pm, killed = kill_node(args.pgdata1, args.autoctl_pidfile1)
    except (OSError, RuntimeError) as e:
        stop.set()
        print(f"failover: FAILED: killing node 1: {e}")
        return 1

    # Wait until every client has written to the new primary, then a little more.
    deadline = t_start + args.deadline
    while True:
        writers = sum(1 for c in clients if c.last_ack_port == args.port2)
        if writers == len(clients):
            break
        if time.monotonic() > deadline or not any(c.is_alive() for c in clients):
            failures.append(f"the clients did not all reach a writable primary on port {args.port2} "
                            f"within {args.deadline:.0f}s of the start ({writers} of {len(clients)} did)")
            break
        time.sleep(0.1)
    time.sleep(args.after)
    stop.set()
    for c in clients:
        c.join(max(1.0, deadline - time.monotonic() + 5))
    failures += [f"{c.name}: {c.error}" for c in clients if c.error]
    failures += [f"{c.name}: never finished" for c in clients if c.is_alive()]
    if any(args.port1 in c.ports[1:] for c in clients):
        failures.append(f"a client reconnected to the killed node's port {args.port1}")
    failures += ledger.failures

    fails = sorted(t for t in ledger.fail_times if t >= t_kill)
    # Answers from the old primary can still be in flight when another
    # client's first failure is recorded: count the new primary's only.
    oks = sorted(t for t, p in ledger.ack_times if p == args.port2 and fails and t > fails[0])
    if not fails:
        failures.append("no write failed after the kill: the primary was not lost")
        gap = first_fail = first_ok = float("nan")
    elif not oks:
        failures.append("no write succeeded on the new primary after the first failed one")
        gap = first_fail = first_ok = float("nan")
    else:
        first_fail, first_ok = fails[0] - t_kill, oks[0] - t_kill
        gap = oks[0] - fails[0]
    if ledger.fail_times and min(ledger.fail_times) < t_kill:
        failures.append(f"{sum(1 for t in ledger.fail_times if t < t_kill)} failed calls before the kill")

    # The new primary, through the same multi-host string.
    try:
        checks, found = check_new_primary(args, rw, ledger)
    except psycopg.Error as e:
        checks, found = [f"checking the new primary: {e}"], None
    failures += checks

    print(f"failover: {args.clients} clients, node 1 (port {args.port1}) lost after {kill_after:.1f}s of load "
          f"(seed {seed}): SIGKILL of its pg_autoctl, postmaster {pm} and children ({killed} processes); "
          f"{acked_at_kill} registrations acknowledged by then, {len(ledger.acked)} in all; "
          f"{len(ledger.unknown)} calls cut off and re-posted ({ledger.unknown_echoed} echoed: committed before "
          f"the loss; {ledger.unknown_created} created on the new primary)")
    print(f"failover: first failed write {first_fail:.2f}s after the kill, first write on the new primary "
          f"{first_ok:.2f}s after it: writable gap {gap:.1f}s")
    if found is not None:
        print(f"failover: on node 2 (port {args.port2}): {found['rows']} rows for {len(ledger.sent)} thermos ids "
              f"sent; {found['lost']} of {len(ledger.acked)} acknowledged missing, {found['changed']} with another "
              f"job id; {found['echoes']} of {found['reposted']} re-posts echoed")
        with open(args.ledger, "w") as f:
            json.dump({"acked": ledger.acked, "unknown": sorted(ledger.unknown), "lost": found["lost"],
                       "echoes": found["echoes"], "gap": gap}, f)
    if failures:
        print("failover: FAILED")
        for x in failures:
            print(f"  {x}")
        return 1
    return 0


def check_new_primary(args, rw, ledger):
    """The checks on the promoted node: (failures, counts)."""
    failures = []
    with connect(rw) as conn:
        port = conn.info.port
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        if port != args.port2 or in_recovery:
            failures.append(f"the read-write connection after the failover went to port {port} "
                            f"(in recovery: {in_recovery}), not to node 2 ({args.port2})")
        table = table_rows(conn)
        doubled = [t for t, (n, _) in table.items() if n != 1]
        lost = [t for t in ledger.acked if t not in table]
        changed = [t for t, j in ledger.acked.items() if t in table and table[t][1] != j]
        ghosts = [t for t in table if t not in ledger.sent]
        unanswered = [t for t in ledger.sent if t not in ledger.acked]
        if doubled:
            failures.append(f"{len(doubled)} thermos ids with more than one row, e.g. {doubled[:3]}")
        if lost:
            failures.append(f"{len(lost)} acknowledged registrations LOST, e.g. {lost[:3]}")
        if changed:
            failures.append(f"{len(changed)} acknowledged ids with another job id, e.g. {changed[:3]}")
        if ghosts:
            failures.append(f"{len(ghosts)} rows for thermos ids never sent, e.g. {ghosts[:3]}")
        if unanswered:
            failures.append(f"{len(unanswered)} ids sent but never acknowledged, e.g. {unanswered[:3]}")
        if len(table) != len(ledger.sent):
            failures.append(f"{len(table)} rows for {len(ledger.sent)} distinct thermos ids sent")
        # Every id sent, acknowledged or cut off, re-posted: an echo with the acknowledged id.
        ids = sorted(ledger.sent)
        answers = repost_all(conn, ids)
        echoes = sum(1 for t in ids if answers[t][1] is False)
        not_echo = [t for t in ids if answers[t][1] is not False]
        other_id = [t for t in ids if t in ledger.acked and answers[t][0] != ledger.acked[t]]
        if not_echo:
            failures.append(f"{len(not_echo)} re-posts after the failover did not echo, e.g. {not_echo[:3]}")
        if other_id:
            failures.append(f"{len(other_id)} re-posts echoed another job id, e.g. {other_id[:3]}")
        after_reposts = conn.execute("SELECT count(*) FROM apollo_jobs.jobs").fetchone()[0]
        if after_reposts != len(table):
            failures.append(f"the re-posts changed the row count ({len(table)} -> {after_reposts})")
    return failures, {"rows": len(table), "lost": len(lost), "changed": len(changed), "echoes": echoes,
                      "reposted": len(ids)}


def cmd_replica(args):
    failures = []
    with open(args.ledger) as f:
        acked = json.load(f)["acked"]
    primary = f"host=127.0.0.1 port={args.port2} dbname={args.dbname} user={args.user}"
    replica = f"host=127.0.0.1 port={args.port1} dbname={args.dbname} user={args.user}"
    with connect(primary) as p, connect(replica) as r:
        if r.execute("SELECT pg_is_in_recovery()").fetchone()[0] is not True:
            failures.append(f"node 1 (port {args.port1}) is not a standby")
        target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + 30
        while not r.execute("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)", [target]).fetchone()[0]:
            if time.monotonic() > deadline:
                failures.append(f"node 1 did not replay up to {target} within 30s")
                break
            time.sleep(0.1)
        on_primary, on_replica = table_rows(p), table_rows(r)
        if on_primary != on_replica:
            diff = set(on_primary.items()) ^ set(on_replica.items())
            failures.append(f"node 1 differs from the new primary in {len(diff)} rows, e.g. {sorted(diff)[:3]}")
        ids = sorted(acked)
        answers = repost_all(r, ids)
        wrong = [t for t in ids if answers[t] != (acked[t], False)]
        if wrong:
            failures.append(f"{len(wrong)} acknowledged ids did not echo on node 1, e.g. {wrong[:3]}")
    print(f"failover: node 1 rejoined as a standby of node 2: {len(on_replica)} rows, the same as the new "
          f"primary's; {len(ids) - len(wrong)} of {len(ids)} acknowledged ids echo there")
    if failures:
        print("failover: FAILED")
        for x in failures:
            print(f"  {x}")
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load", "replica"):
        s = sub.add_parser(name)
        s.add_argument("--port1", type=int, required=True, help="node 1 (the first primary)")
        s.add_argument("--port2", type=int, required=True, help="node 2 (the first standby)")
        s.add_argument("--dbname", default="app")
        s.add_argument("--user", default="apollo_api")
        s.add_argument("--ledger", required=True, help="JSON file: written by load, read by replica")
    s = sub.choices["load"]
    s.add_argument("--pgdata1", required=True)
    s.add_argument("--autoctl-pidfile1", required=True, help="node 1's pg_autoctl.pid")
    s.add_argument("--clients", type=int, default=6)
    s.add_argument("--min-load", type=float, default=1.5, help="seconds of load before the kill, at least")
    s.add_argument("--max-load", type=float, default=3.0)
    s.add_argument("--after", type=float, default=1.0, help="seconds of load once all clients write again")
    s.add_argument("--deadline", type=float, default=90.0, help="seconds from the start for the whole load")
    s.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    if args.cmd == "load":
        args.pgdata1 = os.path.realpath(args.pgdata1)
        return cmd_load(args)
    try:
        return cmd_replica(args)
    except psycopg.Error as e:
        print(f"failover: FAILED: checking node 1 as a standby: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
