"""The psycopg example service (tests/clients/python/jobs_api.py) behind
pgbouncer in transaction pooling: the prepared-statement check and the stress
run of tests/poolers/run.sh.

  prepare   psycopg's default prepare_threshold (5) through a pool of ONE
            server connection: the first client's 6th execution of a query
            prepares it as "_pg3_0" on that server session, the second
            client's 6th prepares "_pg3_0" again on the same session and fails
            with 42P05 (duplicate_prepared_statement); a prepared statement
            that is missing on the session a transaction gets fails with
            26000 the same way. Then the example's connect()
            (prepare_threshold=None) runs the same sequence, 60 executions per
            client, without an error.
  stress    CLIENTS client connections (each a thread with its own
            connection through pgbouncer, default 40) over a pool of at most
            4 server connections register the same IDS thermos ids (every
            client every id, in nearly the same order, org and project jobs),
            poll each answered job, and list their org every 10th call.
            Checked: per thermos id exactly one 202 (created = t) and one job
            id in every answer, the table has exactly that row; every other
            registration a 409, every poll a 200 with that job, every listing
            a 200; no other status at all; pgbouncer's SHOW POOLS, sampled
            every 20 ms, never shows more than 4 server connections for the
            pool, and pg_stat_activity on the server never more than 4
            backends of the service's role; at some point at least 32 clients
            were connected to pgbouncer at once.

Prints one line per part; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))
from jobs_api import JOB_BY_ID, connect, create_job, get_job, list_jobs  # noqa: E402

ORGS = {"org_acme": ["prj_acme_web", "prj_acme_old"], "org_umbrella": ["prj_umbrella_lab"]}
MAX_SERVER_CONNECTIONS = 4


def registration(i: int) -> dict:
    org = sorted(ORGS)[i % len(ORGS)]
    project = None if i % 3 == 0 else ORGS[org][i % len(ORGS[org])]
    return {"thermos_job_id": f"wf-pooled-{i:04d}", "job_class": "project" if project else "org",
            "org_id": org, "project_id": project, "job_type": "batch_revoke" if i % 2 else "key_rotation"}


def check_prepare(args) -> list[str]:
    failures = []
    single = dict(host="127.0.0.1", port=args.pooler_port, dbname=args.single_db, user="apollo_api")
    params = ["oj_000000000000000000000", "org_acme", None]

    def run(conn, n):
        for _ in range(n):
            conn.execute(JOB_BY_ID, params).fetchall()

    # psycopg's default: prepare_threshold=5
    with connect(**single, prepare_threshold=5) as a, connect(**single, prepare_threshold=5) as b:
        run(a, 6)  # the 6th execution prepares _pg3_0 on the one server session
        try:
            run(b, 6)
            failures.append("prepare_threshold=5: the second client's prepared statement did not collide")
            seen = None
        except psycopg.Error as err:
            seen = err.sqlstate
            if err.sqlstate not in ("42P05", "26000"):
                failures.append(f"prepare_threshold=5: expected 42P05 or 26000, got {err.sqlstate}: {err}")
    # the example's connect(): prepare_threshold=None, never a named statement
    errors = 0
    with connect(**single) as a, connect(**single) as b:
        for _ in range(30):
            for conn in (a, b):
                try:
                    run(conn, 1)
                except psycopg.Error as err:
                    errors += 1
                    failures.append(f"prepare_threshold=None: {err.sqlstate}: {err}")
                    break
    print(f"poolers: prepare: psycopg's default prepare_threshold=5 failed with {seen} on the second client's 6th "
          f"execution; prepare_threshold=None: 120 executions over 2 clients, {errors} errors")
    return failures


class Sampler(threading.Thread):
    """Server connections (pgbouncer's SHOW POOLS and the server's pg_stat_activity) and connected clients."""

    def __init__(self, args):
        super().__init__(name="sampler", daemon=True)
        self.args, self.stop = args, threading.Event()
        self.max_pool_servers = self.max_backends = self.max_clients = self.samples = 0
        self.error = None

    def run(self):
        try:
            # the admin console speaks the simple query protocol only: a ClientCursor
            with psycopg.connect(host="127.0.0.1", port=self.args.pooler_port, dbname="pgbouncer", user="postgres",
                                 autocommit=True, cursor_factory=psycopg.ClientCursor) as admin, \
                    psycopg.connect(dbname=self.args.dbname, user="postgres", autocommit=True) as server:
                while not self.stop.is_set():
                    cur = admin.execute("SHOW POOLS")
                    cols = [d.name for d in cur.description]
                    for row in cur.fetchall():
                        pool = dict(zip(cols, row))
                        if pool["database"] == self.args.dbname and pool["user"] == "apollo_api":
                            servers = sum(pool[k] for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
                            self.max_pool_servers = max(self.max_pool_servers, servers)
                            self.max_clients = max(self.max_clients, pool["cl_active"] + pool["cl_waiting"])
                    n = server.execute(
                        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = %s AND usename = 'apollo_api'",
                        [self.args.dbname]).fetchone()[0]
                    self.max_backends = max(self.max_backends, n)
                    self.samples += 1
                    time.sleep(0.02)
        except Exception as err:  # noqa: BLE001 - reported as a failure
            self.error = err


class Client(threading.Thread):
    def __init__(self, n, args, regs, barrier):
        super().__init__(name=f"client-{n}", daemon=True)
        self.n, self.args, self.regs, self.barrier = n, args, regs, barrier
        self.answers = []  # (thermos id, status, job id)
        self.polls = Counter()
        self.listings = Counter()
        self.errors = []

    def run(self):
        rng = random.Random(self.n)
        order = list(range(len(self.regs)))
        for s in range(0, len(order), 8):  # nearly the same order for everyone: the ids are raced
            chunk = order[s:s + 8]
            rng.shuffle(chunk)
            order[s:s + 8] = chunk
        try:
            conn = connect(host="127.0.0.1", port=self.args.pooler_port, dbname=self.args.dbname, user="apollo_api")
        except psycopg.Error as err:
            self.errors.append(f"connect: {err}")
            self.barrier.abort()
            return
        with conn:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                return
            for k, i in enumerate(order):
                reg = self.regs[i]
                r = create_job(conn, reg)
                if r.status not in (202, 409) or "job_id" not in r.body:
                    self.errors.append(f"POST {reg['thermos_job_id']}: {r.status} {r.sqlstate} {r.body}")
                    continue
                job_id = r.body["job_id"]
                self.answers.append((reg["thermos_job_id"], r.status, job_id))
                p = get_job(conn, job_id, reg["org_id"], reg["project_id"])
                self.polls[p.status] += 1
                if p.status != 200 or p.body.get("thermos_job_id") != reg["thermos_job_id"]:
                    self.errors.append(f"GET {job_id}: {p.status} {p.sqlstate} {p.body}")
                if k % 10 == 0:
                    page = list_jobs(conn, {"org_id": reg["org_id"], "include_project_jobs": "true", "limit": "50"})
                    self.listings[page.status] += 1
                    if page.status != 200:
                        self.errors.append(f"list {reg['org_id']}: {page.status} {page.sqlstate} {page.body}")


def stress(args) -> list[str]:
    failures = []
    regs = [registration(i) for i in range(args.ids)]
    barrier = threading.Barrier(args.clients)
    clients = [Client(n, args, regs, barrier) for n in range(args.clients)]
    sampler = Sampler(args)
    sampler.start()
    t0 = time.monotonic()
    for c in clients:
        c.start()
    deadline = t0 + args.deadline
    for c in clients:
        c.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    sampler.stop.set()
    sampler.join(5)

    hung = [c.name for c in clients if c.is_alive()]
    if hung:
        failures.append(f"{len(hung)} clients still running after {args.deadline}s")
    errors = [e for c in clients for e in c.errors]
    if errors:
        failures.append(f"{len(errors)} answers a client cannot act on, e.g. {errors[:3]}")
    answers = [a for c in clients for a in c.answers]
    by_id = defaultdict(list)
    for thermos, status, job_id in answers:
        by_id[thermos].append((status, job_id))
    if len(answers) != args.clients * args.ids and not errors and not hung:
        failures.append(f"{len(answers)} registrations answered, expected {args.clients * args.ids}")
    not_one = {t: sum(s == 202 for s, _ in v) for t, v in by_id.items() if sum(s == 202 for s, _ in v) != 1}
    if not_one:
        failures.append(f"{len(not_one)} thermos ids without exactly one 202, e.g. {list(not_one.items())[:3]}")
    split = [t for t, v in by_id.items() if len({j for _, j in v}) != 1]
    if split:
        failures.append(f"{len(split)} thermos ids answered with more than one job id, e.g. {split[:3]}")
    with psycopg.connect(dbname=args.dbname, user="postgres", autocommit=True) as server:
        rows = server.execute("SELECT thermos_job_id, count(*), min(job_id::text) FROM apollo_jobs.jobs "
                              "WHERE thermos_job_id LIKE 'wf-pooled-%' GROUP BY 1").fetchall()
    table = {r[0]: (r[1], r[2]) for r in rows}
    if len(table) != len(regs) or any(n != 1 for n, _ in table.values()):
        failures.append(f"the table holds {len(table)} thermos ids ({sum(n for n, _ in table.values())} rows), "
                        f"expected {len(regs)} with one row each")
    wrong = [t for t, v in by_id.items() if t in table and {j for _, j in v} != {table[t][1]}]
    if wrong:
        failures.append(f"{len(wrong)} thermos ids whose answered id is not the row's, e.g. {wrong[:3]}")
    if sampler.error is not None:
        failures.append(f"the sampler failed: {sampler.error}")
    if sampler.samples == 0:
        failures.append("no sample of the server connections was taken")
    if sampler.max_pool_servers > MAX_SERVER_CONNECTIONS or sampler.max_backends > MAX_SERVER_CONNECTIONS:
        failures.append(f"more than {MAX_SERVER_CONNECTIONS} server connections: SHOW POOLS {sampler.max_pool_servers}, "
                        f"pg_stat_activity {sampler.max_backends}")
    if sampler.max_clients < 32:
        failures.append(f"at most {sampler.max_clients} clients were connected at once, expected at least 32")
    statuses = Counter(s for _, s, _ in answers)
    polls = sum((c.polls for c in clients), Counter())
    listings = sum((c.listings for c in clients), Counter())
    print(f"poolers: stress: {args.clients} clients (at most {sampler.max_clients} at once) over at most "
          f"{sampler.max_pool_servers} server connections (SHOW POOLS; pg_stat_activity {sampler.max_backends}, "
          f"{sampler.samples} samples): {len(answers)} registrations ({statuses[202]} x 202, {statuses[409]} x 409) "
          f"of {len(regs)} thermos ids, {sum(polls.values())} polls ({polls[200]} x 200), "
          f"{sum(listings.values())} listings ({listings[200]} x 200), {len(errors)} errors, {elapsed:.1f}s")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["prepare", "stress"])
    p.add_argument("--pooler-port", required=True)
    p.add_argument("--dbname", default="pooled")
    p.add_argument("--single-db", default="pooled_single", help="pgbouncer's database entry with pool_size=1")
    p.add_argument("--clients", type=int, default=40)
    p.add_argument("--ids", type=int, default=300)
    p.add_argument("--deadline", type=float, default=90.0)
    args = p.parse_args()
    if args.part == "stress" and args.clients < 32:
        sys.exit("poolers: at least 32 clients")
    failures = check_prepare(args) if args.part == "prepare" else stress(args)
    for f in failures:
        print(f"poolers: FAIL: {args.part}: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
