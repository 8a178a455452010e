"""jobs_api.py against the scratch cluster (PGHOST/PGPORT from tests/clients/run.sh):
create/poll/list, dedup under concurrent requests, the 40001 and 40P01
retries, the SQLSTATE -> HTTP mapping with real errors from the extension and
the server (read-only transactions, lock and statement timeouts, terminated
sessions), and JobsService's reconnect after its connection was ended.

Run: python -m unittest -v test_jobs_api  (from this directory)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg

import jobs_api
from jobs_api import (
    JOB_BY_ID, LIST_JOBS, RETRY_SQLSTATES, STATUS_BY_SQLSTATE, STATUS_BY_SQLSTATE_CLASS, UPSERT_JOB, JobsService,
    connect, create_job, error_response, execute_with_retry, get_job, list_jobs, status_of,
)

HERE = Path(__file__).resolve().parent
# tests/poolers/run.sh runs this suite with the service's connections behind
# pgbouncer in transaction pooling: SERVICE_PGHOST/SERVICE_PGPORT point the
# service roles' connections (apollo_api, apollo_api_rr, apollo_nobody) at it,
# while the postgres role's (fixtures, locks, pg_stat_activity) go straight to
# the server in PGHOST/PGPORT. SERVICE_POOL_MODE=transaction skips the tests
# that need a server session of their own (each says why).
SERVICE = ({"host": os.environ.get("SERVICE_PGHOST", "127.0.0.1"), "port": os.environ["SERVICE_PGPORT"]}
           if os.environ.get("SERVICE_PGPORT") else {})
POOLED = os.environ.get("SERVICE_POOL_MODE") == "transaction"


def session_bound(why):
    return unittest.skipIf(POOLED, f"needs its own server session: {why}")


FIXTURE = HERE.parent / "fixture"
DB = "py_api"
DB_NO_TABLE = "py_api_no_table"
DB_BROKEN = "py_api_broken_binding"
DB_FULL = "py_api_full"  # CONNECTION LIMIT 0
JOB_ID = re.compile(r"(oj|pj)_[0-9A-Za-z]{21}")


def org_job(thermos, **overrides):
    return {"thermos_job_id": thermos, "job_class": "org", "org_id": "org_acme", "project_id": None,
            "job_type": "batch_revoke", **overrides}


def project_job(thermos, **overrides):
    return {"thermos_job_id": thermos, "job_class": "project", "org_id": "org_acme",
            "project_id": "prj_acme_web", "job_type": "batch_revoke", **overrides}


def admin(dbname="postgres"):
    return psycopg.connect(dbname=dbname, user="postgres", autocommit=True)


def fresh_database(name, jobs_table=True):
    with admin() as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    with admin(name) as c:
        c.execute((HERE.parent.parent / "fixture" / "host.sql").read_text())
        c.execute((FIXTURE / "service.sql").read_text())
        if jobs_table:
            c.execute((FIXTURE / "jobs.sql").read_text())


def setUpModule():
    fresh_database(DB)
    fresh_database(DB_NO_TABLE, jobs_table=False)
    fresh_database(DB_BROKEN)
    with admin(DB_BROKEN) as c:
        # the project binding now names a column that is gone: reads raise 55000
        c.execute("ALTER TABLE public.projects DROP COLUMN deleted")


def lock_waiters(application_name):
    with admin(DB) as c:
        return c.execute(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            [application_name]).fetchone()[0]


def wait_until(probe, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


class TableLocked:
    """A session holding ACCESS EXCLUSIVE on apollo_jobs.jobs (what a DBA's ALTER TABLE takes) until exit."""

    def __enter__(self):
        self.conn = psycopg.connect(dbname=DB, user="postgres")
        self.conn.execute("LOCK TABLE apollo_jobs.jobs IN ACCESS EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc):
        self.conn.rollback()
        self.conn.close()


def terminate(application_name):
    with admin(DB) as c:
        return [r[0] for r in c.execute(
            "SELECT pg_catalog.pg_terminate_backend(pid, 10000) FROM pg_catalog.pg_stat_activity"
            " WHERE application_name = %s", [application_name]).fetchall()]


class CreateAndPoll(unittest.TestCase):
    def setUp(self):
        self.conn = connect(**SERVICE, dbname=DB, user="apollo_api")

    def tearDown(self):
        self.conn.close()

    def test_org_job_created_then_conflict_with_same_id(self):
        first = create_job(self.conn, org_job("py-org-1"))
        self.assertEqual(first.status, 202)
        self.assertRegex(first.body["job_id"], r"^oj_")
        self.assertTrue(JOB_ID.fullmatch(first.body["job_id"]))
        self.assertEqual(first.headers["Location"], f"/v1/jobs/{first.body['job_id']}?org_id=org_acme")
        again = create_job(self.conn, org_job("py-org-1"))
        self.assertEqual((again.status, again.body), (409, {"job_id": first.body["job_id"], "created": False}))
        polled = get_job(self.conn, first.body["job_id"], "org_acme")
        self.assertEqual(polled.status, 200)
        self.assertEqual(
            {k: polled.body[k] for k in ("job_id", "job_class", "org_id", "project_id", "job_type", "thermos_job_id")},
            {"job_id": first.body["job_id"], "job_class": "org", "org_id": "org_acme", "project_id": None,
             "job_type": "batch_revoke", "thermos_job_id": "py-org-1"})

    def test_project_job_visible_only_in_its_scope(self):
        created = create_job(self.conn, project_job("py-prj-1"))
        self.assertEqual(created.status, 202)
        self.assertRegex(created.body["job_id"], r"^pj_[0-9A-Za-z]{21}$")
        job_id = created.body["job_id"]
        self.assertEqual(get_job(self.conn, job_id, "org_acme", "prj_acme_web").status, 200)
        for org, prj in [("org_acme", None), ("org_umbrella", "prj_acme_web"), ("org_acme", "prj_acme_old")]:
            with self.subTest(org=org, prj=prj):
                r = get_job(self.conn, job_id, org, prj)
                self.assertEqual((r.status, r.body), (404, {"error": "not_found"}))

    def test_unknown_and_malformed_ids_are_404(self):
        for job_id in ("oj_000000000000000000000", "not-a-job-id", "'; DROP TABLE apollo_jobs.jobs; --"):
            with self.subTest(job_id=job_id):
                self.assertEqual(get_job(self.conn, job_id, "org_acme").status, 404)

    def test_soft_deleted_project_hides_its_jobs(self):
        created = create_job(self.conn, project_job("py-prj-old", project_id="prj_acme_old"))
        self.assertEqual(created.status, 202)
        with admin(DB) as c:
            c.execute("UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_acme_old'")
        try:
            self.assertEqual(get_job(self.conn, created.body["job_id"], "org_acme", "prj_acme_old").status, 404)
        finally:
            with admin(DB) as c:
                c.execute("UPDATE public.projects SET deleted = false WHERE nano_id = 'prj_acme_old'")


class Errors(unittest.TestCase):
    def setUp(self):
        self.conn = connect(**SERVICE, dbname=DB, user="apollo_api")

    def tearDown(self):
        self.conn.close()

    def test_bad_arguments_are_400_with_the_extensions_message(self):
        cases = [
            (org_job(None), "22004", r'"thermos_job_id" must not be null'),
            ({"thermos_job_id": "py-e1", "job_class": "org", "org_id": "org_acme"}, "22004", r'"job_type" must not be null'),
            (org_job("py-e2", org_id=""), "22023", r'"org_id" must not be empty'),
            (org_job("x" * 1001), "22023", r'"thermos_job_id" is too long'),
            (org_job("py-e3", job_class="team"), "22023", r"invalid job_class"),
            (org_job("py-e4", project_id="prj_acme_web"), "22023", r"project_id must be null for an org job"),
            (project_job("py-e5", project_id=None), "22023", r"project_id is required"),
            (org_job("py-e6", job_type="Batch-Revoke"), "22023", r"invalid job_type"),
        ]
        for body, sqlstate, message in cases:
            with self.subTest(message=message):
                r = create_job(self.conn, body)
                self.assertEqual((r.status, r.sqlstate, r.body["error"]), (400, sqlstate, "invalid_argument"))
                self.assertRegex(r.body["message"], message)

    def test_non_text_fields_are_400_before_any_sql(self):
        self.assertEqual(create_job(self.conn, org_job(42)).status, 400)
        self.assertEqual(create_job(self.conn, ["not", "an", "object"]).status, 400)

    def test_unknown_org_or_project_is_404_without_the_key(self):
        for body in (org_job("py-e7", org_id="org_nope"), project_job("py-e8", project_id="prj_nope")):
            r = create_job(self.conn, body)
            self.assertEqual((r.status, r.sqlstate), (404, "23503"))
            self.assertEqual(r.body, {"error": "not_found", "message": "org or project not found"})

    def test_workflow_of_another_tenant_is_409_with_no_details(self):
        mine = create_job(self.conn, project_job("py-taken"))
        self.assertEqual(mine.status, 202)
        theirs = create_job(self.conn, project_job("py-taken", org_id="org_umbrella", project_id="prj_umbrella_lab"))
        self.assertEqual((theirs.status, theirs.sqlstate, theirs.body, theirs.headers), (409, "23505", {"error": "conflict"}, {}))

    def test_jobs_table_missing_is_500_without_retry_after(self):
        # an operator must create the table: a retry would fail the same way
        with connect(**SERVICE, dbname=DB_NO_TABLE, user="apollo_api") as conn:
            r = create_job(conn, org_job("py-e9"))
            self.assertEqual((r.status, r.sqlstate, r.body, r.headers), (500, "55000", {"error": "internal"}, {}))
            r = get_job(conn, "oj_000000000000000000000", "org_acme")
            self.assertEqual((r.status, r.sqlstate, r.headers), (500, "55000", {}))

    def test_role_without_grants_is_500_with_no_details(self):
        with connect(**SERVICE, dbname=DB, user="apollo_nobody") as conn:
            r = create_job(conn, org_job("py-e10"))
            self.assertEqual((r.status, r.sqlstate, r.body), (500, "42501", {"error": "internal"}))

    def test_poll_without_org_is_400(self):
        r = get_job(self.conn, "oj_000000000000000000000", None)
        self.assertEqual((r.status, r.sqlstate), (400, "22004"))


class EverySqlstate(unittest.TestCase):
    """Each documented SQLSTATE raised for real, then mapped."""

    def raised(self, user, dbname, sql, params):
        with connect(**({} if user == "postgres" else SERVICE), dbname=dbname, user=user) as conn:
            with self.assertRaises(psycopg.Error) as caught:
                conn.execute(sql, params)
        return caught.exception

    def test_each_documented_sqlstate(self):
        cases = {
            "22004": ("apollo_api", DB, UPSERT_JOB, [None, "org", "org_acme", None, "batch_revoke"], 400),
            "22023": ("apollo_api", DB, UPSERT_JOB, ["py-m1", "org", "", None, "batch_revoke"], 400),
            "22P02": ("apollo_api", DB, "SELECT apollo_jobs.job_class_of($1)", ["not-an-id"], 400),
            "23514": ("apollo_api", DB, "SELECT $1::apollo_jobs.job_id", ["not-an-id"], 400),
            "23503": ("apollo_api", DB, UPSERT_JOB, ["py-m2", "org", "org_nope", None, "batch_revoke"], 404),
            "55000": ("apollo_api", DB_NO_TABLE, JOB_BY_ID, ["oj_000000000000000000000", "org_acme", None], 500),
            "42501": ("apollo_nobody", DB, UPSERT_JOB, ["py-m3", "org", "org_acme", None, "batch_revoke"], 500),
            "22003": ("apollo_api", DB, LIST_JOBS, ["org_acme", None, "false", None, None, "99999999999"], 400),
            "0A000": ("postgres", DB, "UPDATE apollo_jobs.jobs SET job_type = job_type WHERE false", [], 500),
        }
        with connect(**SERVICE, dbname=DB, user="apollo_api") as conn:
            conn.execute(UPSERT_JOB, ["py-m4", "org", "org_acme", None, "batch_revoke"])
        cases["23505"] = ("apollo_api", DB, UPSERT_JOB, ["py-m4", "org", "org_umbrella", None, "batch_revoke"], 409)
        for sqlstate, (user, dbname, sql, params, status) in cases.items():
            with self.subTest(sqlstate=sqlstate):
                err = self.raised(user, dbname, sql, params)
                self.assertEqual(err.sqlstate, sqlstate, str(err))
                self.assertEqual(error_response(err).status, status)

    def test_too_many_connections_is_503(self):
        # a database at its CONNECTION LIMIT (53300); libpq reports a refused
        # connection without a SQLSTATE, directly and behind pgbouncer alike
        with admin() as c:
            c.execute(f"DROP DATABASE IF EXISTS {DB_FULL} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {DB_FULL} CONNECTION LIMIT 0")
        with self.assertRaises(psycopg.OperationalError) as caught:
            with connect(**SERVICE, dbname=DB_FULL, user="apollo_api") as conn:
                conn.execute("SELECT 1")
        self.assertIn("too many connections for database", str(caught.exception))
        self.assertIsNone(caught.exception.sqlstate)
        r = error_response(caught.exception)
        self.assertEqual((r.status, r.body, r.headers), (503, {"error": "unavailable"}, {"Retry-After": "1"}))

    def test_40001_when_the_snapshot_predates_a_committed_registration(self):
        args = ["py-m5", "org", "org_acme", None, "batch_revoke"]
        with connect(**SERVICE, dbname=DB, user="apollo_api") as late, connect(**SERVICE, dbname=DB, user="apollo_api") as early:
            late.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            late.execute("SELECT 1")  # takes the snapshot
            early.execute(UPSERT_JOB, args)
            with self.assertRaises(psycopg.errors.SerializationFailure) as caught:
                late.execute(UPSERT_JOB, args)
            late.execute("ROLLBACK")
        self.assertEqual(caught.exception.sqlstate, "40001")
        self.assertEqual(error_response(caught.exception).status, 503)

    def test_25006_new_registration_in_a_read_only_transaction(self):
        with connect(**SERVICE, dbname=DB, user="apollo_api") as conn:
            conn.execute("BEGIN READ ONLY")
            with self.assertRaises(psycopg.Error) as caught:
                conn.execute(UPSERT_JOB, ["py-m6", "org", "org_acme", None, "batch_revoke"])
            conn.execute("ROLLBACK")
        self.assertEqual(caught.exception.sqlstate, "25006", str(caught.exception))
        self.assertEqual(error_response(caught.exception).status, 503)

    def test_27000_a_trigger_swallows_the_registration(self):
        with connect(dbname=DB, user="postgres") as c:  # everything below is rolled back
            c.execute("BEGIN")
            c.execute("CREATE FUNCTION public.swallow() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'")
            c.execute("CREATE TRIGGER swallow BEFORE INSERT ON apollo_jobs.jobs FOR EACH ROW EXECUTE FUNCTION public.swallow()")
            with self.assertRaises(psycopg.Error) as caught:
                c.execute(UPSERT_JOB, ["py-m7", "org", "org_acme", None, "batch_revoke"])
            c.execute("ROLLBACK")
        self.assertEqual(caught.exception.sqlstate, "27000", str(caught.exception))
        r = error_response(caught.exception)
        self.assertEqual((r.status, r.body), (500, {"error": "internal"}))

    def test_no_sqlstate_is_503(self):
        err = psycopg.OperationalError("connection refused")
        self.assertEqual(error_response(err).status, 503)

    def test_mapping_is_the_documented_table(self):
        doc = (HERE.parent / "PRISMA.md").read_text()
        table = doc[doc.index("<!-- sqlstate-http -->"):]
        documented = {m[1]: int(m[2]) for m in re.finditer(r"^\| `([0-9A-Z]{5})` \| (\d{3}) \|", table, re.M)}
        self.assertEqual(dict(STATUS_BY_SQLSTATE), documented)
        classes = {m[1]: int(m[2]) for m in re.finditer(r"^\| `([0-9A-Z]{2})xxx` \| (\d{3}) \|", table, re.M)}
        self.assertEqual(dict(STATUS_BY_SQLSTATE_CLASS), classes)

    def test_the_catalogue(self):
        expected = {
            "22003": 400, "22004": 400, "22021": 400, "22023": 400, "22P02": 400, "23514": 400, "23503": 404,
            "23505": 409, "40001": 503, "40P01": 503, "25006": 503, "55P03": 503, "57014": 503, "57P01": 503,
            "57P02": 503, "57P03": 503, "53300": 503, "55000": 500, "0A000": 500, "27000": 500, "42501": 500, "58000": 500,
        }
        self.assertEqual(dict(STATUS_BY_SQLSTATE), expected)
        self.assertEqual(RETRY_SQLSTATES, ("40001", "40P01"))
        for code in ("08000", "08003", "08006", "08P01"):
            self.assertEqual(status_of(code), 503, code)
        for code in ("XX000", "42P01", "42883", "42P07"):
            self.assertEqual(status_of(code), 500, code)


class Concurrency(unittest.TestCase):
    def burst(self, user, thermos, n=16, **kwargs):
        """n threads, one connection each, released together: the statuses and ids."""
        barrier = threading.Barrier(n)
        results = [None] * n
        retried = []

        def worker(i):
            with connect(**SERVICE, dbname=DB, user=user) as conn:
                barrier.wait()
                results[i] = create_job(conn, project_job(thermos), on_retry=lambda a, e: retried.append(e.sqlstate), **kwargs)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return results, retried

    def assert_one_created(self, results, thermos):
        statuses = sorted(r.status for r in results)
        self.assertEqual(statuses, [202] + [409] * (len(results) - 1))
        ids = {r.body["job_id"] for r in results}
        self.assertEqual(len(ids), 1)
        with admin(DB) as c:
            rows = c.execute("SELECT job_id::text FROM apollo_jobs.jobs WHERE thermos_job_id = %s", [thermos]).fetchall()
        self.assertEqual([r[0] for r in rows], list(ids))

    def test_read_committed_burst(self):
        results, retried = self.burst("apollo_api", "py-burst-rc")
        self.assert_one_created(results, "py-burst-rc")
        self.assertEqual(retried, [])

    def test_repeatable_read_burst_with_retries(self):
        results, retried = self.burst("apollo_api_rr", "py-burst-rr", max_attempts=5)
        self.assert_one_created(results, "py-burst-rr")
        self.assertTrue(all(s == "40001" for s in retried))
        print(f"\n  repeatable read burst: {len(retried)} request(s) retried after 40001", end=" ")

    def race(self, user, thermos, **kwargs):
        """Our request waits on an uncommitted registration of the same workflow, which then commits."""
        retried = []
        # the watcher is a session of its own: pg_stat_activity is read once per transaction
        with connect(dbname=DB, user="postgres") as holder, connect(dbname=DB, user="postgres") as watcher, \
                connect(**SERVICE, dbname=DB, user=user) as conn:
            holder.execute("BEGIN")
            held = holder.execute(UPSERT_JOB, [thermos, "org", "org_acme", None, "batch_revoke"]).fetchone()["job_id"]
            result = {}
            t = threading.Thread(target=lambda: result.setdefault(
                "r", create_job(conn, org_job(thermos), on_retry=lambda a, e: retried.append(e.sqlstate), **kwargs)))
            t.start()
            deadline = time.monotonic() + 10
            while not watcher.execute(
                    "SELECT count(*) AS n FROM pg_catalog.pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'",
                    [user]).fetchone()["n"]:
                self.assertLess(time.monotonic(), deadline, "our request never waited on the lock")
                time.sleep(0.02)
            holder.execute("COMMIT")
            t.join(30)
        return held, result["r"], retried

    def test_race_read_committed_is_409_without_retry(self):
        held, r, retried = self.race("apollo_api", "py-race-rc")
        self.assertEqual((r.status, r.body["job_id"], retried), (409, held, []))

    def test_race_repeatable_read_retries_once_then_409(self):
        held, r, retried = self.race("apollo_api_rr", "py-race-rr")
        self.assertEqual((r.status, r.body["job_id"], retried), (409, held, ["40001"]))

    def test_race_repeatable_read_without_retries_is_503(self):
        held, r, retried = self.race("apollo_api_rr", "py-race-rr1", max_attempts=1)
        self.assertEqual((r.status, r.sqlstate, r.headers, retried), (503, "40001", {"Retry-After": "1"}, []))


class ScopeOwnership(unittest.TestCase):
    # By design (README, "What the upsert does not decide"): the FK proves the
    # project exists, not whose it is; the API's authorization checks that
    # the caller's project belongs to the caller's org before it calls.
    def test_a_foreign_project_is_not_the_extensions_to_refuse(self):
        with connect(**SERVICE, dbname=DB, user="apollo_api") as conn:
            r = create_job(conn, project_job("py-cross-tenant", project_id="prj_umbrella_lab"))
            self.assertEqual(r.status, 202)
            self.assertEqual(get_job(conn, r.body["job_id"], "org_umbrella", "prj_umbrella_lab").status, 404)


ORG = "org_list"
EMPTY_PAGE = {"data": [], "has_more": False, "next_cursor": None}


def expected_ids(where, params=()):
    """The listing's expected ids, straight from the table in the documented order."""
    with admin(DB) as c:
        return [r[0] for r in c.execute(
            f"SELECT job_id FROM apollo_jobs.jobs WHERE {where} ORDER BY created_at DESC, job_id DESC", params).fetchall()]


class Listing(unittest.TestCase):
    """GET /v1/jobs. A tenant of its own: org_list with projects prj_list_a,
    prj_list_b (soft-deleted by a test) and prj_list_c; org_list_other with prj_other."""

    registered: dict[str, list[str]] = {}

    @classmethod
    def setUpClass(cls):
        cls.registered = {"org": [], "prj_list_a": [], "prj_list_b": [], "prj_list_c": []}
        with admin(DB) as c:
            c.execute("INSERT INTO public.orgs (nano_id) VALUES ('org_list'), ('org_list_other')")
            c.execute("INSERT INTO public.projects (nano_id, org_id) VALUES ('prj_list_a', 'org_list'),"
                      " ('prj_list_b', 'org_list'), ('prj_list_c', 'org_list'), ('prj_other', 'org_list_other')")
        with connect(**SERVICE, dbname=DB, user="apollo_api") as conn:
            # one by one: distinct created_at
            for i in range(4):
                r = create_job(conn, org_job(f"py-list-org-{i}", org_id=ORG, job_type="key_rotation" if i % 2 else "batch_revoke"))
                assert r.status == 202, r
                cls.registered["org"].append(r.body["job_id"])
            # in one transaction: one created_at for all, so job_id DESC orders them
            conn.execute("BEGIN")
            for i in range(4, 10):
                row = conn.execute(UPSERT_JOB, [f"py-list-org-{i}", "org", ORG, None,
                                                "key_rotation" if i % 2 else "batch_revoke"]).fetchone()
                cls.registered["org"].append(row["job_id"])
            for prj, n in (("prj_list_a", 5), ("prj_list_b", 2), ("prj_list_c", 1)):
                for i in range(n):
                    row = conn.execute(UPSERT_JOB, [f"py-list-{prj}-{i}", "project", ORG, prj, "batch_revoke"]).fetchone()
                    cls.registered[prj].append(row["job_id"])
            conn.execute("COMMIT")
            conn.execute(UPSERT_JOB, ["py-list-other", "project", "org_list_other", "prj_other", "batch_revoke"])

    def setUp(self):
        self.conn = connect(**SERVICE, dbname=DB, user="apollo_api")
        self.service = JobsService(**SERVICE, dbname=DB, user="apollo_api")

    def tearDown(self):
        self.conn.close()
        self.service.close()

    def list(self, **params):
        return list_jobs(self.conn, params)

    def page_through(self, **params):
        """Follows next_cursor from the first page to the last: every page's body."""
        pages, cursor = [], None
        while True:
            r = self.list(**params, starting_after=cursor)
            self.assertEqual(r.status, 200, r.body)
            pages.append(r.body)
            if not r.body["has_more"]:
                return pages
            self.assertEqual(r.body["next_cursor"], r.body["data"][-1]["job_id"])
            cursor = r.body["next_cursor"]
            self.assertLess(len(pages), 100, "paging does not end")

    @staticmethod
    def ids(pages):
        return [j["job_id"] for p in pages for j in p["data"]]

    def test_pages_through_an_orgs_jobs_each_once_in_order(self):
        want = expected_ids("org_id = 'org_list' AND project_id IS NULL")
        self.assertEqual(sorted(want), sorted(self.registered["org"]))
        pages = self.page_through(org_id=ORG, limit="3")
        self.assertEqual([len(p["data"]) for p in pages], [3, 3, 3, 1])
        self.assertEqual([p["has_more"] for p in pages], [True, True, True, False])
        self.assertIsNone(pages[-1]["next_cursor"])
        self.assertEqual(self.ids(pages), want)
        first = pages[0]["data"][0]
        self.assertEqual(sorted(first), ["created_at", "job_class", "job_id", "job_type", "org_id", "project_id", "thermos_job_id"])
        self.assertEqual((first["job_class"], first["project_id"]), ("org", None))
        stamps = [j["created_at"] for p in pages for j in p["data"]]
        self.assertLess(len(set(stamps)), len(stamps), "some jobs share created_at")

    def test_a_full_last_page_says_has_more_and_the_next_is_empty(self):
        pages = self.page_through(org_id=ORG, limit="5")
        self.assertEqual([(len(p["data"]), p["has_more"]) for p in pages], [(5, True), (5, True), (0, False)])
        self.assertEqual(pages[-1], EMPTY_PAGE)

    def test_defaults(self):
        r = self.list(org_id=ORG)
        self.assertEqual(r.status, 200)
        self.assertEqual([j["job_id"] for j in r.body["data"]], expected_ids("org_id = 'org_list' AND project_id IS NULL"))
        self.assertEqual((r.body["has_more"], r.body["next_cursor"]), (False, None))

    def test_include_project_jobs(self):
        want = expected_ids("org_id = 'org_list'")
        self.assertEqual(len(want), 18)
        pages = self.page_through(org_id=ORG, include_project_jobs="true", limit="4")
        self.assertEqual(self.ids(pages), want)
        self.assertGreaterEqual(len(pages), 5)

    def test_one_project(self):
        want = expected_ids("project_id = 'prj_list_a'")
        self.assertEqual(sorted(want), sorted(self.registered["prj_list_a"]))
        pages = self.page_through(org_id=ORG, project_id="prj_list_a", limit="2")
        self.assertEqual([len(p["data"]) for p in pages], [2, 2, 1])
        self.assertEqual(self.ids(pages), want)

    def test_job_type(self):
        want = expected_ids("org_id = 'org_list' AND project_id IS NULL AND job_type = 'key_rotation'")
        self.assertEqual(len(want), 5)
        self.assertEqual(self.ids(self.page_through(org_id=ORG, job_type="key_rotation", limit="2")), want)

    def test_bad_foreign_or_unknown_cursor_is_400_with_one_message(self):
        [other] = expected_ids("org_id = 'org_list_other'")
        messages = set()
        for cursor in ("garbage", "", "oj_000000000000000000000", other, self.registered["prj_list_a"][0]):
            with self.subTest(cursor=cursor):
                r = self.list(org_id=ORG, starting_after=cursor, limit="3")
                self.assertEqual((r.status, r.sqlstate, r.body["error"]), (400, "22023", "invalid_argument"))
                messages.add(r.body["message"])
        self.assertEqual(len(messages), 1, messages)
        self.assertRegex(messages.pop(), "cursor")

    def test_limit_out_of_range_is_400(self):
        for limit, sqlstate in (("0", "22023"), ("1001", "22023"), ("-1", "22023"), ("abc", "22P02"),
                                ("2.5", "22P02"), ("", "22P02"), ("99999999999", "22003")):
            with self.subTest(limit=limit):
                r = self.list(org_id=ORG, limit=limit)
                self.assertEqual((r.status, r.sqlstate), (400, sqlstate))
        for limit in ("1", "1000"):
            self.assertEqual(self.list(org_id=ORG, limit=limit).status, 200)

    def test_other_bad_parameters_are_400(self):
        self.assertEqual(self.list(limit="3").sqlstate, "22004")
        self.assertEqual(self.list(org_id=ORG, project_id="prj_list_a", include_project_jobs="true").status, 400)
        self.assertEqual(self.list(org_id=ORG, include_project_jobs="maybe").status, 400)
        self.assertEqual(self.list(org_id=ORG, job_type="Bad-Type").status, 400)
        typo = self.service.handle("GET", "/v1/jobs", urlencode({"org_id": ORG, "starting_afer": "x"}))
        self.assertEqual((typo.status, typo.body["message"]), (400, "unknown query parameter: starting_afer"))
        self.assertEqual(self.service.handle("GET", "/v1/jobs", "org_id=org_list&org_id=org_acme").status, 400)

    def test_through_the_service(self):
        r = self.service.handle("GET", "/v1/jobs", urlencode({"org_id": ORG, "limit": "3"}))
        self.assertEqual(r.status, 200)
        r2 = self.service.handle("GET", "/v1/jobs", urlencode({"org_id": ORG, "limit": "3", "starting_after": r.body["next_cursor"]}))
        self.assertEqual([j["job_id"] for j in r.body["data"] + r2.body["data"]],
                         expected_ids("org_id = 'org_list' AND project_id IS NULL")[:6])

    def test_another_orgs_project_lists_nothing(self):
        for org, prj in (("org_acme", "prj_list_a"), (ORG, "prj_other"), ("org_list_other", "prj_list_a")):
            with self.subTest(org=org, prj=prj):
                r = self.list(org_id=org, project_id=prj)
                self.assertEqual((r.status, r.body), (200, EMPTY_PAGE))

    def test_soft_deleted_project_lists_nothing(self):
        self.assertEqual(len(self.list(org_id=ORG, project_id="prj_list_b").body["data"]), 2)
        with admin(DB) as c:
            c.execute("UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_list_b'")
        try:
            r = self.list(org_id=ORG, project_id="prj_list_b")
            self.assertEqual((r.status, r.body), (200, EMPTY_PAGE))
            ids = self.ids(self.page_through(org_id=ORG, include_project_jobs="true", limit="1000"))
            self.assertEqual(ids, expected_ids("org_id = 'org_list' AND project_id IS DISTINCT FROM 'prj_list_b'"))
            self.assertFalse(set(ids) & set(self.registered["prj_list_b"]))
            r = self.list(org_id=ORG, project_id="prj_list_b", starting_after=self.registered["prj_list_b"][0])
            self.assertEqual(r.status, 400)
        finally:
            with admin(DB) as c:
                c.execute("UPDATE public.projects SET deleted = false WHERE nano_id = 'prj_list_b'")

    def test_soft_deleted_org_lists_nothing(self):
        with admin(DB) as c:
            c.execute("UPDATE public.orgs SET deleted = true WHERE nano_id = 'org_list_other'")
        try:
            for params in ({"org_id": "org_list_other"}, {"org_id": "org_list_other", "project_id": "prj_other"},
                           {"org_id": "org_list_other", "include_project_jobs": "true"}):
                with self.subTest(**params):
                    r = self.list(**params)
                    self.assertEqual((r.status, r.body), (200, EMPTY_PAGE))
        finally:
            with admin(DB) as c:
                c.execute("UPDATE public.orgs SET deleted = false WHERE nano_id = 'org_list_other'")

    def test_broken_binding_missing_table_missing_grants(self):
        with connect(**SERVICE, dbname=DB_BROKEN, user="apollo_api") as conn:
            r = list_jobs(conn, {"org_id": "org_acme"})
            self.assertEqual((r.status, r.sqlstate, r.body, r.headers), (500, "55000", {"error": "internal"}, {}))
            r = get_job(conn, "oj_000000000000000000000", "org_acme")
            self.assertEqual((r.status, r.sqlstate), (500, "55000"))
        with connect(**SERVICE, dbname=DB_NO_TABLE, user="apollo_api") as conn:
            r = list_jobs(conn, {"org_id": "org_acme"})
            self.assertEqual((r.status, r.sqlstate), (500, "55000"))
        with connect(**SERVICE, dbname=DB, user="apollo_nobody") as conn:
            r = list_jobs(conn, {"org_id": "org_acme"})
            self.assertEqual((r.status, r.sqlstate, r.body), (500, "42501", {"error": "internal"}))


class ServerStates(unittest.TestCase):
    """JobsService against server states provoked for real."""

    def service(self, name, **kwargs):
        s = JobsService(**SERVICE, dbname=DB, user="apollo_api", application_name=name, log=self.logged.append, **kwargs)
        self.addCleanup(s.close)
        return s

    def setUp(self):
        self.logged = []

    @staticmethod
    def post(service, body):
        return service.handle("POST", "/v1/jobs", "", json.dumps(body).encode())

    @staticmethod
    def get(service, job_id, org_id="org_acme"):
        return service.handle("GET", f"/v1/jobs/{job_id}", urlencode({"org_id": org_id}))

    @staticmethod
    def list(service, **params):
        return service.handle("GET", "/v1/jobs", urlencode(params))

    @session_bound("a startup option (-c default_transaction_read_only), which pgbouncer 1.18 refuses")
    def test_25006_read_only_new_registration_is_503_echo_poll_list_work(self):
        known = self.post(self.service("py_rw"), org_job("py-ro-known"))
        self.assertEqual(known.status, 202)
        ro = self.service("py_ro", options="-c default_transaction_read_only=on")
        r = self.post(ro, org_job("py-ro-new"))
        self.assertEqual((r.status, r.sqlstate, r.headers, r.body), (503, "25006", {"Retry-After": "1"}, {"error": "unavailable"}))
        echo = self.post(ro, org_job("py-ro-known"))
        self.assertEqual((echo.status, echo.body), (409, {"job_id": known.body["job_id"], "created": False}))
        self.assertEqual(self.get(ro, known.body["job_id"]).status, 200)
        listed = self.list(ro, org_id="org_acme", limit="1000")
        self.assertEqual(listed.status, 200)
        self.assertIn(known.body["job_id"], [j["job_id"] for j in listed.body["data"]])
        with admin(DB) as c:
            self.assertEqual(c.execute("SELECT count(*) FROM apollo_jobs.jobs WHERE thermos_job_id = 'py-ro-new'").fetchone()[0], 0)

    @session_bound("a startup option (-c lock_timeout)")
    def test_55p03_lock_timeout_is_503_for_create_poll_and_list(self):
        s = self.service("py_lock", options="-c lock_timeout=200")
        known = self.post(s, org_job("py-lock-known"))
        self.assertEqual(known.status, 202)
        with TableLocked():
            for r in (self.post(s, org_job("py-lock-1")), self.get(s, known.body["job_id"]), self.list(s, org_id="org_acme")):
                self.assertEqual((r.status, r.sqlstate, r.headers), (503, "55P03", {"Retry-After": "1"}))
        self.assertEqual(self.post(s, org_job("py-lock-1")).status, 202)
        self.assertEqual(s.connects, 1)  # the same connection throughout

    @session_bound("a startup option (-c statement_timeout)")
    def test_57014_statement_timeout_is_503(self):
        s = self.service("py_slow", options="-c statement_timeout=200")
        with TableLocked():
            for r in (self.post(s, org_job("py-slow-1")), self.list(s, org_id="org_acme")):
                self.assertEqual((r.status, r.sqlstate, r.headers), (503, "57014", {"Retry-After": "1"}))
        self.assertEqual(self.post(s, org_job("py-slow-1")).status, 202)

    @session_bound("pg_terminate_backend of the service's own server session and its backend_pid")
    def test_57p01_idle_connection_terminated_then_the_service_reconnects(self):
        s = self.service("py_kill_idle")
        known = self.post(s, org_job("py-kill-idle"))
        self.assertEqual(known.status, 202)
        pid = s.connection.info.backend_pid
        self.assertEqual(terminate("py_kill_idle"), [True])
        # the request that meets the dead connection: 503, nothing leaked
        r = self.get(s, known.body["job_id"])
        self.assertEqual((r.status, r.headers, r.body), (503, {"Retry-After": "1"}, {"error": "unavailable"}))
        self.assertIn(r.sqlstate, ("57P01", None))
        # and from the next one on, a new connection serves every request
        for _ in range(3):
            self.assertEqual(self.get(s, known.body["job_id"]).status, 200)
        self.assertEqual(self.post(s, org_job("py-kill-idle-2")).status, 202)
        self.assertEqual(s.connects, 2)
        self.assertNotEqual(s.connection.info.backend_pid, pid)
        self.assertIn("jobs_api: the database connection was lost; opening a new one", self.logged)

    @session_bound("pg_terminate_backend of the service's own server session")
    def test_57p01_during_a_request_is_503_then_the_service_reconnects(self):
        s = self.service("py_kill_busy")
        self.assertEqual(self.list(s, org_id="org_acme").status, 200)
        with TableLocked():
            result = {}
            t = threading.Thread(target=lambda: result.setdefault("r", self.post(s, org_job("py-kill-busy"))))
            t.start()
            wait_until(lambda: lock_waiters("py_kill_busy") > 0)
            self.assertEqual(terminate("py_kill_busy"), [True])
            t.join(30)
        r = result["r"]
        self.assertEqual((r.status, r.sqlstate, r.headers), (503, "57P01", {"Retry-After": "1"}))
        again = self.post(s, org_job("py-kill-busy"))
        self.assertEqual(again.status, 202)  # the terminated attempt wrote nothing
        self.assertEqual(s.connects, 2)

    def test_unreachable_database_is_503_and_retried_on_each_request(self):
        s = JobsService(host="127.0.0.1", port=1, dbname=DB, user="apollo_api", connect_timeout=2)
        self.addCleanup(s.close)
        for _ in range(2):
            r = self.post(s, org_job("py-nowhere"))
            self.assertEqual((r.status, r.sqlstate, r.headers), (503, None, {"Retry-After": "1"}))
        self.assertEqual(s.connects, 0)


class Deadlocks(unittest.TestCase):
    """40P01: retried like 40001, then 503."""

    @classmethod
    def setUpClass(cls):
        # two transactions registering two thermos ids in opposite orders
        errors = []
        with connect(**SERVICE, dbname=DB, user="apollo_api") as a, connect(**SERVICE, dbname=DB, user="apollo_api") as b:
            a.execute("BEGIN")
            b.execute("BEGIN")
            a.execute(UPSERT_JOB, ["py-dl-1", "org", "org_acme", None, "batch_revoke"])
            b.execute(UPSERT_JOB, ["py-dl-2", "org", "org_acme", None, "batch_revoke"])

            def second(conn, thermos):
                try:
                    conn.execute(UPSERT_JOB, [thermos, "org", "org_acme", None, "batch_revoke"])
                except psycopg.Error as err:
                    errors.append(err)

            threads = [threading.Thread(target=second, args=(a, "py-dl-2")),
                       threading.Thread(target=second, args=(b, "py-dl-1"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            a.execute("ROLLBACK")
            b.execute("ROLLBACK")
        cls.deadlock = errors[0] if errors else None

    def test_the_server_raised_40p01_which_maps_to_503(self):
        self.assertIsNotNone(self.deadlock, "one of the two should have been the deadlock victim")
        self.assertEqual(self.deadlock.sqlstate, "40P01", str(self.deadlock))
        self.assertEqual(error_response(self.deadlock).status, 503)

    class Flaky:
        """A connection whose first `failures` statements fail with `err`."""

        def __init__(self, real, err, failures):
            self.real, self.err, self.failures, self.attempts = real, err, failures, 0

        def execute(self, sql, args):
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1
                raise self.err
            return self.real.execute(sql, args)

    def test_a_deadlocked_attempt_is_retried_and_succeeds(self):
        with connect(**SERVICE, dbname=DB, user="apollo_api") as conn:
            flaky = self.Flaky(conn, self.deadlock, 1)
            seen = []
            r = create_job(flaky, org_job("py-dl-retried"), on_retry=lambda n, e: seen.append(e.sqlstate))
        self.assertEqual((r.status, seen, flaky.attempts), (202, ["40P01"], 2))

    def test_when_retries_run_out_503_with_retry_after(self):
        flaky = self.Flaky(None, self.deadlock, 100)
        seen = []
        r = create_job(flaky, org_job("py-dl-never"), max_attempts=4, on_retry=lambda n, e: seen.append((n, e.sqlstate)))
        self.assertEqual((r.status, r.sqlstate, r.headers, r.body), (503, "40P01", {"Retry-After": "1"}, {"error": "unavailable"}))
        self.assertEqual(flaky.attempts, 4)
        self.assertEqual(seen, [(1, "40P01"), (2, "40P01"), (3, "40P01")])

    def test_other_errors_are_not_retried(self):
        with connect(**SERVICE, dbname=DB, user="apollo_api") as conn:
            with self.assertRaises(psycopg.Error) as caught:
                conn.execute(UPSERT_JOB, [None, "org", "org_acme", None, "batch_revoke"])
        flaky = self.Flaky(None, caught.exception, 100)
        with self.assertRaises(psycopg.Error):
            execute_with_retry(flaky, UPSERT_JOB, [], max_attempts=5)
        self.assertEqual(flaky.attempts, 1)


class OverHttp(unittest.TestCase):
    """JobsService as a WSGI app behind wsgiref, over real HTTP."""

    @classmethod
    def setUpClass(cls):
        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        cls.logged = []
        cls.service = JobsService(**SERVICE, dbname=DB, user="apollo_api", log=cls.logged.append)
        cls.server = make_server("127.0.0.1", 0, cls.service, handler_class=Quiet)
        cls.base = f"http://127.0.0.1:{cls.server.server_port}"
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.service.close()

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={} if body is None else {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.status, dict(res.headers), json.loads(res.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read())

    def test_create_poll_list(self):
        status, headers, body = self.call("POST", "/v1/jobs", project_job("py-http-1"))
        self.assertEqual(status, 202)
        job_id = body["job_id"]
        self.assertEqual(headers["Location"], f"/v1/jobs/{job_id}?org_id=org_acme&project_id=prj_acme_web")
        self.assertEqual(self.call("POST", "/v1/jobs", project_job("py-http-1"))[:3:2], (409, {"job_id": job_id, "created": False}))
        status, _, polled = self.call("GET", headers["Location"])
        self.assertEqual((status, polled["thermos_job_id"]), (200, "py-http-1"))
        status, _, page = self.call("GET", "/v1/jobs?" + urlencode({"org_id": "org_acme", "project_id": "prj_acme_web", "limit": "1000"}))
        self.assertEqual(status, 200)
        self.assertIn(job_id, [j["job_id"] for j in page["data"]])
        self.assertEqual(page["data"], sorted(page["data"], key=lambda j: (j["created_at"], j["job_id"]), reverse=True))

    def test_errors(self):
        status, headers, body = self.call("GET", "/v1/jobs?org_id=org_acme&limit=0")
        self.assertEqual((status, body["error"]), (400, "invalid_argument"))
        self.assertEqual(self.call("GET", "/v1/jobs/oj_000000000000000000000?org_id=org_acme")[0], 404)
        self.assertEqual(self.call("GET", "/v1/jobs/%E0%A4%A?org_id=org_acme")[0], 404)
        self.assertEqual(self.call("POST", "/v1/jobs", [1, 2])[0], 400)
        self.assertEqual(self.call("DELETE", "/v1/jobs")[0], 404)
        self.assertTrue(any(line.startswith("GET /v1/jobs -> 400 (22023)") for line in self.logged), self.logged)


class SharedSql(unittest.TestCase):
    @unittest.skipUnless(shutil.which("node"), "node not installed")
    def test_node_reads_the_same_statements(self):
        out = subprocess.run(
            ["node", "-e", "process.stdout.write(JSON.stringify(require('./sql').statements))"],
            cwd=HERE.parent / "node", check=True, capture_output=True, text=True).stdout
        self.assertEqual(json.loads(out), jobs_api.STATEMENTS)

    def test_statement_shapes(self):
        self.assertEqual(sorted(jobs_api.STATEMENTS), ["job_by_id", "list_jobs", "upsert_job"])
        self.assertIn("apollo_jobs.upsert_job_by_thermos_id(", UPSERT_JOB)
        self.assertEqual(re.findall(r"\$\d", UPSERT_JOB), ["$1", "$2", "$3", "$4", "$5"])
        self.assertEqual(re.findall(r"\$\d", JOB_BY_ID), ["$1", "$2", "$3"])
        self.assertIn("apollo_jobs.list_jobs(", LIST_JOBS)
        self.assertEqual(re.findall(r"(\w+) => \$(\d)", LIST_JOBS), [
            ("org_id", "1"), ("project_id", "2"), ("include_project_jobs", "3"), ("job_type", "4"),
            ("starting_after", "5"), ("page_size", "6")])


if __name__ == "__main__":
    unittest.main()
