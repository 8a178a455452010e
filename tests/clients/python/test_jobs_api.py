"""jobs_api.py against the scratch cluster (PGHOST/PGPORT from tests/clients/run.sh):
create/poll, dedup under concurrent requests, the 40001 retry, and the
SQLSTATE -> HTTP mapping with real errors from the extension.

Run: python -m unittest -v test_jobs_api  (from this directory)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import unittest
from pathlib import Path

import psycopg

import jobs_api
from jobs_api import JOB_BY_ID, STATUS_BY_SQLSTATE, UPSERT_JOB, connect, create_job, error_response, get_job

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "fixture"
DB = "py_api"
DB_NO_TABLE = "py_api_no_table"
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
        c.execute((FIXTURE / "host.sql").read_text())
        if jobs_table:
            c.execute((FIXTURE / "jobs.sql").read_text())


def setUpModule():
    fresh_database(DB)
    fresh_database(DB_NO_TABLE, jobs_table=False)


class CreateAndPoll(unittest.TestCase):
    def setUp(self):
        self.conn = connect(dbname=DB, user="apollo_api")

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
        self.conn = connect(dbname=DB, user="apollo_api")

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

    def test_jobs_table_missing_is_503(self):
        with connect(dbname=DB_NO_TABLE, user="apollo_api") as conn:
            r = create_job(conn, org_job("py-e9"))
            self.assertEqual((r.status, r.sqlstate, r.headers), (503, "55000", {"Retry-After": "1"}))
            self.assertEqual(get_job(conn, "oj_000000000000000000000", "org_acme").status, 503)

    def test_role_without_grants_is_500_with_no_details(self):
        with connect(dbname=DB, user="apollo_nobody") as conn:
            r = create_job(conn, org_job("py-e10"))
            self.assertEqual((r.status, r.sqlstate, r.body), (500, "42501", {"error": "internal"}))

    def test_poll_without_org_is_400(self):
        r = get_job(self.conn, "oj_000000000000000000000", None)
        self.assertEqual((r.status, r.sqlstate), (400, "22004"))


class EverySqlstate(unittest.TestCase):
    """Each documented SQLSTATE raised for real, then mapped."""

    def raised(self, user, dbname, sql, params):
        with connect(dbname=dbname, user=user) as conn:
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
            "55000": ("apollo_api", DB_NO_TABLE, JOB_BY_ID, ["oj_000000000000000000000", "org_acme", None], 503),
            "42501": ("apollo_nobody", DB, UPSERT_JOB, ["py-m3", "org", "org_acme", None, "batch_revoke"], 500),
        }
        with connect(dbname=DB, user="apollo_api") as conn:
            conn.execute(UPSERT_JOB, ["py-m4", "org", "org_acme", None, "batch_revoke"])
        cases["23505"] = ("apollo_api", DB, UPSERT_JOB, ["py-m4", "org", "org_umbrella", None, "batch_revoke"], 409)
        for sqlstate, (user, dbname, sql, params, status) in cases.items():
            with self.subTest(sqlstate=sqlstate):
                err = self.raised(user, dbname, sql, params)
                self.assertEqual(err.sqlstate, sqlstate, str(err))
                self.assertEqual(error_response(err).status, status)

    def test_40001_when_the_snapshot_predates_a_committed_registration(self):
        args = ["py-m5", "org", "org_acme", None, "batch_revoke"]
        with connect(dbname=DB, user="apollo_api") as late, connect(dbname=DB, user="apollo_api") as early:
            late.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            late.execute("SELECT 1")  # takes the snapshot
            early.execute(UPSERT_JOB, args)
            with self.assertRaises(psycopg.errors.SerializationFailure) as caught:
                late.execute(UPSERT_JOB, args)
            late.execute("ROLLBACK")
        self.assertEqual(caught.exception.sqlstate, "40001")
        self.assertEqual(error_response(caught.exception).status, 503)

    def test_no_sqlstate_is_503(self):
        err = psycopg.OperationalError("connection refused")
        self.assertEqual(error_response(err).status, 503)

    def test_mapping_is_the_documented_table(self):
        doc = (HERE.parent / "PRISMA.md").read_text()
        table = doc[doc.index("<!-- sqlstate-http -->"):]
        documented = {m[1]: int(m[2]) for m in re.finditer(r"^\| `([0-9A-Z]{5})` \| (\d{3}) \|", table, re.M)}
        self.assertEqual(dict(STATUS_BY_SQLSTATE), documented)


class Concurrency(unittest.TestCase):
    def burst(self, user, thermos, n=16, **kwargs):
        """n threads, one connection each, released together: the statuses and ids."""
        barrier = threading.Barrier(n)
        results = [None] * n
        retried = []

        def worker(i):
            with connect(dbname=DB, user=user) as conn:
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
                connect(dbname=DB, user=user) as conn:
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
        with connect(dbname=DB, user="apollo_api") as conn:
            r = create_job(conn, project_job("py-cross-tenant", project_id="prj_umbrella_lab"))
            self.assertEqual(r.status, 202)
            self.assertEqual(get_job(conn, r.body["job_id"], "org_umbrella", "prj_umbrella_lab").status, 404)


class SharedSql(unittest.TestCase):
    @unittest.skipUnless(shutil.which("node"), "node not installed")
    def test_node_reads_the_same_statements(self):
        out = subprocess.run(
            ["node", "-e", "process.stdout.write(JSON.stringify(require('./sql').statements))"],
            cwd=HERE.parent / "node", check=True, capture_output=True, text=True).stdout
        self.assertEqual(json.loads(out), jobs_api.STATEMENTS)

    def test_statement_shapes(self):
        self.assertEqual(sorted(jobs_api.STATEMENTS), ["job_by_id", "upsert_job"])
        self.assertIn("apollo_jobs.upsert_job_by_thermos_id(", UPSERT_JOB)
        self.assertEqual(re.findall(r"\$\d", UPSERT_JOB), ["$1", "$2", "$3", "$4", "$5"])
        self.assertEqual(re.findall(r"\$\d", JOB_BY_ID), ["$1", "$2", "$3"])


if __name__ == "__main__":
    unittest.main()
