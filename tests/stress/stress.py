"""Multi-session stress test of apollo_jobs.upsert_job_by_thermos_id.

At each of READ COMMITTED, REPEATABLE READ and SERIALIZABLE (and in
autocommit mode, the way the API service calls it), CONNECTIONS sessions
register the same IDS thermos ids (spread over a few orgs and projects, org
and project jobs), every session every id, in nearly the same order so that
most ids are raced by many sessions at once. Each call is its own transaction
at the level under test; a 40001 (serialization_failure) is retried in a new
transaction, at most MAX_ATTEMPTS times; anything else is an error.

Checked, per level:
  * per thermos id, exactly one committed call answered created = t;
  * per thermos id, every call answered the same job id;
  * the table holds exactly one row per thermos id, with that job id, and the
    id's prefix matches the job class;
  * job_by_id finds every job in its own scope and not in another org;
  * zero errors at READ COMMITTED and in autocommit mode (not even 40001), zero errors other than
    40001 at every level, and no call ran out of attempts.

Prints calls, creates, echoes and 40001 retries per level. Exits 1 on any
failure, listing what failed. Bounded: a statement_timeout on every session
and a deadline per level.
"""

import argparse
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict

import psycopg
from psycopg import errors
from psycopg.rows import tuple_row

# (name, isolation level or None for autocommit, thermos id tag)
LEVELS = [
    ("autocommit", None, "auto"),
    ("read committed", psycopg.IsolationLevel.READ_COMMITTED, "rc"),
    ("repeatable read", psycopg.IsolationLevel.REPEATABLE_READ, "rr"),
    ("serializable", psycopg.IsolationLevel.SERIALIZABLE, "ser"),
]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixture"))
from fixture import UPSERT, scopes, setup_sql  # noqa: E402  (tests/fixture/fixture.py)

ORGS, PROJECTS = scopes("org_stress", 3)
SETUP_SQL = setup_sql()


def registration(tag, i):
    """The fixed attributes of thermos id number i (so no call ever conflicts)."""
    org = ORGS[i % len(ORGS)]
    if i % 4 == 0:
        job_class, project = "org", None
    else:
        job_class, project = "project", PROJECTS[org][(i // len(ORGS)) % 2]
    job_type = "batch_revoke" if i % 3 else "batch_export"
    return (f"wf-stress-{tag}-{i:04d}", job_class, org, project, job_type)


class Worker(threading.Thread):
    def __init__(self, n, conninfo, level, regs, start_barrier, args):
        super().__init__(name=f"worker-{n}", daemon=True)
        self.n, self.conninfo, self.level, self.regs = n, conninfo, level, regs
        self.start_barrier, self.args = start_barrier, args
        self.answers = []  # (thermos id, job id, created, attempts)
        self.retries = Counter()  # 40001 by where/what
        self.errors = []  # (thermos id, sqlstate, message)
        self.exhausted = []  # thermos ids that ran out of attempts

    def run(self):
        rng = random.Random(self.n)
        # Nearly the same order for everyone: the shared order, shuffled only
        # within small windows, so many sessions race for each id.
        order = list(range(len(self.regs)))
        w = self.args.window
        for s in range(0, len(order), w):
            chunk = order[s : s + w]
            rng.shuffle(chunk)
            order[s : s + w] = chunk
        try:
            conn = psycopg.connect(
                self.conninfo,
                autocommit=self.level is None,
                row_factory=tuple_row,
                application_name=f"apollo_jobs_stress_{self.n}",
                options=f"-c statement_timeout={self.args.statement_timeout_ms}",
            )
        except Exception as e:  # noqa: BLE001 - reported, never swallowed
            self.errors.append(("<connect>", getattr(e, "sqlstate", None), str(e)))
            self.start_barrier.abort()
            return
        if self.level is not None:
            conn.isolation_level = self.level
        try:
            self.start_barrier.wait()
        except threading.BrokenBarrierError:
            conn.close()
            return
        with conn:
            for i in order:
                reg = self.regs[i]
                self.call(conn, reg, rng)
        conn.close()

    def call(self, conn, reg, rng):
        for attempt in range(1, self.args.max_attempts + 1):
            phase = "upsert"
            try:
                with conn.cursor() as cur:
                    cur.execute(UPSERT, reg)
                    rows = cur.fetchall()
                phase = "commit"
                if not conn.autocommit:
                    conn.commit()
            except errors.SerializationFailure as e:
                if not conn.autocommit:
                    conn.rollback()
                self.retries[(phase, (e.diag.message_primary or str(e)).strip())] += 1
                time.sleep(rng.uniform(0, 0.002 * attempt))
                continue
            except psycopg.Error as e:
                if not conn.closed and not conn.autocommit:
                    conn.rollback()
                self.errors.append((reg[0], getattr(e, "sqlstate", None), str(e).strip()))
                return
            if len(rows) != 1 or rows[0][0] is None or rows[0][1] is None:
                self.errors.append((reg[0], None, f"unexpected answer {rows!r}"))
                return
            self.answers.append((reg[0], rows[0][0], rows[0][1], attempt))
            return
        self.exhausted.append(reg[0])


class WaitMonitor(threading.Thread):
    """Samples how many stress sessions wait on another transaction's insert
    (lock waits on a transactionid or speculative token): evidence that the
    ids really were raced, not registered one after another."""

    def __init__(self, conninfo):
        super().__init__(name="wait-monitor", daemon=True)
        self.conninfo, self.stop, self.samples, self.max_waiting, self.waiting_samples = conninfo, threading.Event(), 0, 0, 0

    def run(self):
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stop.is_set():
                n = conn.execute(
                    "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name LIKE 'apollo_jobs_stress_%' "
                    "AND wait_event_type = 'Lock' AND wait_event IN ('transactionid', 'speculative token')"
                ).fetchone()[0]
                self.samples += 1
                self.waiting_samples += n > 0
                self.max_waiting = max(self.max_waiting, n)
                time.sleep(0.005)


def run_level(conninfo, name, level, tag, args):
    regs = [registration(tag, i) for i in range(args.ids)]
    barrier = threading.Barrier(args.connections)
    workers = [Worker(n, conninfo, level, regs, barrier, args) for n in range(args.connections)]
    monitor = WaitMonitor(conninfo)
    monitor.start()
    t0 = time.monotonic()
    for w in workers:
        w.start()
    deadline = t0 + args.level_deadline
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    monitor.stop.set()
    monitor.join(5)
    failures = []
    hung = [w.name for w in workers if w.is_alive()]
    if hung:
        failures.append(f"{len(hung)} sessions still running after {args.level_deadline}s: {', '.join(hung[:5])}")

    answers = [a for w in workers for a in w.answers]
    errs = [e for w in workers for e in w.errors]
    exhausted = [x for w in workers for x in w.exhausted]
    retries = Counter()
    for w in workers:
        retries.update(w.retries)
    n_retries = sum(retries.values())

    by_id = defaultdict(list)
    for thermos, job_id, created, _ in answers:
        by_id[thermos].append((job_id, created))

    expected_calls = args.connections * args.ids
    if len(answers) + len(errs) + len(exhausted) != expected_calls and not hung:
        failures.append(f"{len(answers) + len(errs) + len(exhausted)} calls accounted for, expected {expected_calls}")
    if errs:
        failures.append(f"{len(errs)} errors other than 40001, e.g. {errs[:3]}")
    if exhausted:
        failures.append(f"{len(exhausted)} calls still failing with 40001 after {args.max_attempts} attempts, e.g. {exhausted[:3]}")
    if tag in ("auto", "rc") and n_retries:
        failures.append(f"{n_retries} serialization failures at READ COMMITTED: {dict(retries)}")

    creates = sum(1 for a in answers if a[2])
    echoes = len(answers) - creates
    wrong_creates = {t: sum(1 for _, c in v if c) for t, v in by_id.items() if sum(1 for _, c in v if c) != 1}
    if wrong_creates:
        failures.append(f"{len(wrong_creates)} thermos ids without exactly one created = t, e.g. {list(wrong_creates.items())[:3]}")
    split = {t: {j for j, _ in v} for t, v in by_id.items() if len({j for j, _ in v}) != 1}
    if split:
        failures.append(f"{len(split)} thermos ids answered with more than one job id, e.g. {list(split)[:3]}")
    missing_answers = [r[0] for r in regs if r[0] not in by_id]
    if missing_answers and not errs and not exhausted:
        failures.append(f"{len(missing_answers)} thermos ids never answered")

    # The table, read back.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT thermos_job_id, count(*), min(job_id::text), max(job_id::text), "
            "min(job_class), min(org_id), min(project_id), min(job_type) "
            "FROM apollo_jobs.jobs WHERE thermos_job_id LIKE %s GROUP BY thermos_job_id",
            (f"wf-stress-{tag}-%",),
        ).fetchall()
        table = {r[0]: r for r in rows}
        dupes = [r[0] for r in rows if r[1] != 1]
        if dupes:
            failures.append(f"{len(dupes)} thermos ids with more than one row, e.g. {dupes[:3]}")
        if len(table) != len(regs):
            failures.append(f"table holds {len(table)} thermos ids, expected {len(regs)}")
        mismatched, wrong_attrs, wrong_prefix = [], [], []
        for reg in regs:
            t = table.get(reg[0])
            if t is None:
                continue
            seen_ids = {j for j, _ in by_id.get(reg[0], [])}
            if seen_ids and seen_ids != {t[2]}:
                mismatched.append(reg[0])
            if (t[4], t[5], t[6], t[7]) != (reg[1], reg[2], reg[3], reg[4]):
                wrong_attrs.append(reg[0])
            if not t[2].startswith("oj_" if reg[1] == "org" else "pj_"):
                wrong_prefix.append(reg[0])
        if mismatched:
            failures.append(f"{len(mismatched)} thermos ids whose answered id is not the row's, e.g. {mismatched[:3]}")
        if wrong_attrs:
            failures.append(f"{len(wrong_attrs)} rows with other attributes than registered, e.g. {wrong_attrs[:3]}")
        if wrong_prefix:
            failures.append(f"{len(wrong_prefix)} job ids with the wrong class prefix, e.g. {wrong_prefix[:3]}")
        # The getter: every job in its own scope, none in another org's.
        invisible, leaked = 0, 0
        with conn.cursor() as cur:
            for reg in regs:
                t = table.get(reg[0])
                if t is None:
                    continue
                cur.execute("SELECT count(*) FROM apollo_jobs.job_by_id(%s, %s, %s)", (t[2], reg[2], reg[3]))
                invisible += cur.fetchone()[0] != 1
                other = ORGS[(ORGS.index(reg[2]) + 1) % len(ORGS)]
                cur.execute("SELECT count(*) FROM apollo_jobs.job_by_id(%s, %s, %s)", (t[2], other, reg[3]))
                leaked += cur.fetchone()[0] != 0
        if invisible:
            failures.append(f"job_by_id misses {invisible} jobs in their own scope")
        if leaked:
            failures.append(f"job_by_id shows {leaked} jobs to another org")

    max_attempts = max((a[3] for a in answers), default=0)
    stats = dict(
        level=name, calls=len(answers) + len(errs) + len(exhausted), creates=creates, echoes=echoes,
        retries=n_retries, max_attempts=max_attempts, errors=len(errs) + len(exhausted),
        rows=len(table), seconds=elapsed, retry_kinds=retries,
        max_waiting=monitor.max_waiting, waiting_samples=monitor.waiting_samples, samples=monitor.samples,
    )
    return stats, failures


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dbname", default="apollo_jobs_stress")
    p.add_argument("--connections", type=int, default=int(os.environ.get("STRESS_CONNECTIONS", 32)))
    p.add_argument("--ids", type=int, default=int(os.environ.get("STRESS_IDS", 400)))
    p.add_argument("--window", type=int, default=8, help="shuffle window of the shared call order")
    p.add_argument("--max-attempts", type=int, default=25)
    p.add_argument("--statement-timeout-ms", type=int, default=30000)
    p.add_argument("--level-deadline", type=float, default=120.0, help="seconds per isolation level")
    args = p.parse_args()
    if args.connections < 16:
        sys.exit("stress: at least 16 connections")

    conninfo = f"dbname={args.dbname}"  # host, port, user from PGHOST/PGPORT/PGUSER
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SETUP_SQL)
        for org in ORGS:
            conn.execute("INSERT INTO public.orgs VALUES (%s)", (org,))
            for prj in PROJECTS[org]:
                conn.execute("INSERT INTO public.projects VALUES (%s, %s)", (prj, org))

    print(
        f"stress: {args.connections} sessions x {args.ids} thermos ids "
        f"({len(ORGS)} orgs, {sum(len(v) for v in PROJECTS.values())} projects), "
        f"every session registers every id, one transaction per call, up to {args.max_attempts} attempts on 40001; "
        f"autocommit = read committed, one implicit transaction per call"
    )
    header = f"{'level':<16}{'calls':>7}{'creates':>9}{'echoes':>8}{'40001 retries':>15}{'max attempts':>14}{'errors':>8}{'rows':>6}{'seconds':>9}"
    all_failures = []
    results = []
    for name, level, tag in LEVELS:
        stats, failures = run_level(conninfo, name, level, tag, args)
        results.append(stats)
        all_failures += [f"{name}: {f}" for f in failures]
    print(header)
    for s in results:
        print(
            f"{s['level']:<16}{s['calls']:>7}{s['creates']:>9}{s['echoes']:>8}{s['retries']:>15}"
            f"{s['max_attempts']:>14}{s['errors']:>8}{s['rows']:>6}{s['seconds']:>9.1f}"
        )
    for s in results:
        print(
            f"  {s['level']}: sessions seen waiting on another's insert in {s['waiting_samples']} of "
            f"{s['samples']} samples, at most {s['max_waiting']} at once"
        )
    for s in results:
        for (phase, msg), n in sorted(s["retry_kinds"].items(), key=lambda kv: -kv[1]):
            print(f"  {s['level']}: {n} x 40001 at {phase}: {msg}")
    if all_failures:
        print("stress: FAILED")
        for f in all_failures:
            print(f"  {f}")
        return 1
    print("stress: ok (one create and one id per thermos id, one row per id, no error but retried 40001)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
