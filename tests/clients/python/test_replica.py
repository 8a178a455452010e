"""jobs_api.JobsService with a hot standby: a pg_basebackup -R replica of the
scratch cluster, streaming from it (PGREPLICA_HOST/PGREPLICA_PORT, set by
tests/clients/run.sh; the primary is PGHOST/PGPORT). Reads go to the replica,
registrations to the primary; the replica's lag is made visible by pausing
its WAL replay, which is how the tests prove which server answered.

Run: python -m unittest -v test_replica  (from this directory)
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import unittest
from urllib.parse import urlencode

import psycopg
from psycopg.conninfo import make_conninfo

from jobs_api import JobsService
from test_jobs_api import fresh_database, project_job

DB = "py_replica"
PRIMARY = {"host": os.environ.get("PGHOST", ""), "port": os.environ.get("PGPORT", "")}
REPLICA = {"host": os.environ.get("PGREPLICA_HOST", ""), "port": os.environ.get("PGREPLICA_PORT", "")}


def on_primary():
    return psycopg.connect(dbname=DB, user="postgres", autocommit=True, **PRIMARY)


def on_replica(dbname=DB):
    return psycopg.connect(dbname=dbname, user="postgres", autocommit=True, **REPLICA)


def wait_until(probe, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def replayed():
    """Waits until the replica has replayed everything the primary has written so far."""
    with on_primary() as p:
        lsn = p.execute("SELECT pg_catalog.pg_current_wal_lsn()::text").fetchone()[0]
    with on_replica("postgres") as r:  # DB itself may not have arrived yet
        wait_until(lambda: r.execute(
            "SELECT coalesce(pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", [lsn]).fetchone()[0])


@contextlib.contextmanager
def replay_paused():
    """The replica answers from the state it had when this began."""
    with on_replica() as r:
        r.execute("SELECT pg_catalog.pg_wal_replay_pause()")
        wait_until(lambda: r.execute("SELECT pg_catalog.pg_get_wal_replay_pause_state()").fetchone()[0] == "paused")
        try:
            yield
        finally:
            r.execute("SELECT pg_catalog.pg_wal_replay_resume()")


def setUpModule():
    if not (REPLICA["host"] and REPLICA["port"]):
        raise RuntimeError("PGREPLICA_HOST and PGREPLICA_PORT name the hot standby")
    fresh_database(DB)
    replayed()


def post(service, body):
    return service.handle("POST", "/v1/jobs", "", json.dumps(body).encode())


def poll(service, job_id, org_id="org_acme", project_id="prj_acme_web"):
    return service.handle("GET", f"/v1/jobs/{job_id}", urlencode({"org_id": org_id, "project_id": project_id}))


def listed_ids(service, **params):
    r = service.handle("GET", "/v1/jobs", urlencode({**params, "limit": "1000"}))
    assert r.status == 200, r
    return [j["job_id"] for j in r.body["data"]]


class ReadsOnTheReplica(unittest.TestCase):
    def setUp(self):
        self.service = JobsService(make_conninfo(**PRIMARY), replica=make_conninfo(**REPLICA), dbname=DB, user="apollo_api")
        self.addCleanup(self.service.close)

    def test_each_endpoint_uses_its_server(self):
        r = post(self.service, project_job("py-replica-0"))
        self.assertEqual(r.status, 202)
        self.assertEqual(self.service.connection.execute("SELECT pg_catalog.pg_is_in_recovery() AS r").fetchone()["r"], False)
        self.assertEqual(self.service.replica_connection, None)  # no read yet
        self.assertEqual(listed_ids(self.service, org_id="org_umbrella"), [])
        self.assertEqual(self.service.replica_connection.execute("SELECT pg_catalog.pg_is_in_recovery() AS r").fetchone()["r"], True)
        self.assertEqual((self.service.connects, self.service.replica_connects), (1, 1))

    def test_getter_and_listing_are_answered_by_the_replica(self):
        s = self.service
        created = post(s, project_job("py-replica-1"))
        self.assertEqual(created.status, 202)
        job_id = created.body["job_id"]
        replayed()
        try:
            with replay_paused():
                with on_primary() as p:
                    p.execute("UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_acme_web'")
                with psycopg.connect(dbname=DB, user="apollo_api", **PRIMARY) as p:
                    # the primary hides the job now ...
                    self.assertEqual(p.execute("SELECT count(*) FROM apollo_jobs.job_by_id(%s, 'org_acme', 'prj_acme_web')",
                                               [job_id]).fetchone()[0], 0)
                # ... the service, reading on the replica that has not replayed the soft-delete, still shows it
                self.assertEqual(poll(s, job_id).status, 200)
                self.assertIn(job_id, listed_ids(s, org_id="org_acme", project_id="prj_acme_web"))
            replayed()
            self.assertEqual(poll(s, job_id).status, 404)
            self.assertEqual(listed_ids(s, org_id="org_acme", project_id="prj_acme_web"), [])
        finally:
            with on_primary() as p:
                p.execute("UPDATE public.projects SET deleted = false WHERE nano_id = 'prj_acme_web'")
            replayed()

    def test_read_after_write_on_a_lagging_replica(self):
        s = self.service
        with replay_paused():
            created = post(s, project_job("py-replica-lag"))
            self.assertEqual(created.status, 202)
            job_id = created.body["job_id"]
            with on_replica() as r:
                self.assertEqual(r.execute("SELECT count(*) FROM apollo_jobs.jobs WHERE job_id = %s", [job_id]).fetchone()[0], 0,
                                 "the replica has not replayed the registration")
            # the getter asks the primary after the replica's 404
            polled = poll(s, job_id)
            self.assertEqual((polled.status, polled.body["thermos_job_id"]), (200, "py-replica-lag"))
            # the listing shows what the replica has
            self.assertNotIn(job_id, listed_ids(s, org_id="org_acme", project_id="prj_acme_web"))
        replayed()
        self.assertIn(job_id, listed_ids(s, org_id="org_acme", project_id="prj_acme_web"))

    def test_unknown_job_is_404_from_both(self):
        r = poll(self.service, "pj_000000000000000000000")
        self.assertEqual((r.status, r.body), (404, {"error": "not_found"}))


class WritesFindThePrimary(unittest.TestCase):
    def test_multi_host_read_write_skips_the_standby(self):
        # the standby first in the list: libpq tries it, sees it is read-only and moves on
        conninfo = make_conninfo(host=f"{REPLICA['host']},{PRIMARY['host']}", port=f"{REPLICA['port']},{PRIMARY['port']}",
                                 target_session_attrs="read-write")
        replica = make_conninfo(host=f"{REPLICA['host']},{PRIMARY['host']}", port=f"{REPLICA['port']},{PRIMARY['port']}",
                                target_session_attrs="prefer-standby")
        s = JobsService(conninfo, replica=replica, dbname=DB, user="apollo_api")
        self.addCleanup(s.close)
        r = post(s, project_job("py-multi-host"))
        self.assertEqual(r.status, 202)
        self.assertEqual(s.connection.info.port, int(PRIMARY["port"]))
        self.assertEqual(poll(s, r.body["job_id"]).status, 200)
        self.assertEqual(s.replica_connection.info.port, int(REPLICA["port"]))

    def test_a_write_on_a_standby_is_503_and_the_connection_is_dropped(self):
        writer = JobsService(make_conninfo(**PRIMARY), dbname=DB, user="apollo_api")
        self.addCleanup(writer.close)
        known = post(writer, project_job("py-misrouted-known"))
        self.assertEqual(known.status, 202)
        replayed()
        # the "primary" is the standby: a failover the configuration has not caught up with
        logged = []
        s = JobsService(make_conninfo(**REPLICA), dbname=DB, user="apollo_api", log=logged.append)
        self.addCleanup(s.close)
        echo = post(s, project_job("py-misrouted-known"))  # needs no write: the standby answers it
        self.assertEqual((echo.status, echo.body), (409, {"job_id": known.body["job_id"], "created": False}))
        r = post(s, project_job("py-misrouted-new"))
        self.assertEqual((r.status, r.sqlstate, r.headers, r.body), (503, "25006", {"Retry-After": "1"}, {"error": "unavailable"}))
        self.assertTrue(s.connection.closed)
        # the next request connects anew (to wherever the conninfo leads by then)
        self.assertEqual(post(s, project_job("py-misrouted-known")).status, 409)
        self.assertEqual(s.connects, 2)
        self.assertEqual(logged, ["jobs_api: the database connection was lost; opening a new one"])
        with on_primary() as p:
            self.assertEqual(p.execute("SELECT count(*) FROM apollo_jobs.jobs WHERE thermos_job_id = 'py-misrouted-new'").fetchone()[0], 0)


if __name__ == "__main__":
    unittest.main()
