"""What the API's job endpoints do with apollo_jobs, over psycopg 3.

    POST /v1/jobs           {thermos_job_id, job_class, org_id, project_id, job_type}
         -> 202 {job_id, created: true}    a new job for this workflow
         -> 409 {job_id, created: false}   the workflow's job already exists (same id)
    GET  /v1/jobs/<job_id>?org_id=...[&project_id=...]
         -> 200 {job}  or  404 (not this tenant's, soft-deleted, unknown, malformed)
    GET  /v1/jobs?org_id=...[&project_id=...][&include_project_jobs=true|false]
                 [&job_type=...][&starting_after=<job_id>][&limit=1..1000]
         -> 200 {data: [job...], has_more, next_cursor}   newest first

Any other outcome is a PostgreSQL error whose SQLSTATE picks the status
(status_of: STATUS_BY_SQLSTATE, the same table as the node-postgres example
and PRISMA.md). The service does no validation of its own: the extension
checks every argument and names the wrong one (22004/22023), and the server
parses the listing's boolean and integer parameters (22P02/22003). In a real
service org_id/project_id come from the caller's credentials, and the service
has already checked that the project belongs to the org (the extension's FKs
prove existence only).

create_job / get_job / list_jobs take a connection; JobsService holds one for
a whole process, opens it on first use and opens a new one on the request
after it broke (57P01 and the like), and serves the endpoints as a WSGI app:

    PGHOST=... PGDATABASE=... PGUSER=apollo_api PORT=8080 python jobs_api.py

With PGREPLICA_HOST (and PGREPLICA_PORT) set, the reads (both GETs) go to that
hot standby and only the registrations (POST) to the primary; see JobsService.

The SQL text comes from ../sql/jobs.sql, shared with the node-postgres
example; its $1..$n placeholders go to the server as they are through
psycopg's RawCursor. Connections are in autocommit mode, so each attempt is
one statement with a fresh snapshot, which is what a retry after 40001 or
40P01 needs.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qsl, unquote

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

SQL_FILE = Path(__file__).resolve().parent.parent / "sql" / "jobs.sql"


def parse_statements(text: str) -> dict[str, str]:
    """'-- name: NAME' sections -> {NAME: statement}; the rules of node/sql.js."""
    statements: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if name is None:
            return
        body = list(lines)
        while body and re.fullmatch(r"\s*(--.*)?", body[0]):
            body.pop(0)
        statements[name] = "\n".join(body).strip()

    for line in text.split("\n"):
        m = re.fullmatch(r"-- name: ([a-z_][a-z0-9_]*)\s*", line)
        if m:
            flush()
            name, lines = m.group(1), []
        elif name is not None:
            lines.append(line)
    flush()
    return statements


STATEMENTS = parse_statements(SQL_FILE.read_text(encoding="utf-8"))
UPSERT_JOB = STATEMENTS["upsert_job"]  # $1 thermos_job_id, $2 job_class, $3 org_id, $4 project_id, $5 job_type
JOB_BY_ID = STATEMENTS["job_by_id"]  # $1 job_id, $2 org_id, $3 project_id
# $1 org_id, $2 project_id, $3 include_project_jobs, $4 job_type, $5 starting_after (a job_id), $6 page_size
LIST_JOBS = STATEMENTS["list_jobs"]

STATUS_BY_SQLSTATE: Mapping[str, int] = {
    "22003": 400,  # a listing limit beyond integer (the server's parse of the parameter)
    "22004": 400,  # a required argument is NULL
    "22021": 400,  # not UTF-8 (only in a non-UTF-8 database)
    "22023": 400,  # empty/overlong text, unknown job_class, project_id vs class, bad job_type, bad cursor or page size
    "22P02": 400,  # malformed job id (job_class_of); a listing flag or limit that is not a boolean / integer
    "23514": 400,  # domain or CHECK violation
    "23503": 404,  # unknown org or project
    "23505": 409,  # thermos_job_id registered by a different job; nothing more is said
    "40001": 503,  # serialization failure: retried first, 503 + Retry-After when retries run out
    "40P01": 503,  # deadlock: retried first, 503 + Retry-After when retries run out
    "25006": 503,  # read-only server (a standby, or read-only transactions): writes go to the primary
    "55P03": 503,  # lock_timeout, e.g. behind a DBA's ALTER TABLE on apollo_jobs.jobs
    "57014": 503,  # statement_timeout or a cancel
    "57P01": 503,  # the session was terminated: JobsService reconnects on the next request
    "57P02": 503,  # crash shutdown: JobsService reconnects on the next request
    "57P03": 503,  # the server is starting up or shutting down
    "55000": 503,  # apollo_jobs.jobs not created yet, a broken scope binding, the extension not updated
    "0A000": 500,  # an UPDATE of apollo_jobs.jobs, a non-UTF8 database: the deployment is wrong
    "27000": 500,  # a trigger or rule on apollo_jobs.jobs swallowed the registration
    "42501": 500,  # the service's role lacks the documented grants
    "58000": 500,  # the server's random source failed
}

# SQLSTATE class -> HTTP status, for the codes STATUS_BY_SQLSTATE does not name.
STATUS_BY_SQLSTATE_CLASS: Mapping[str, int] = {
    "08": 503,  # connection exception: JobsService reconnects on the next request
}

# Retried (as a whole transaction: each attempt here is one autocommit statement) before they become a 503.
RETRY_SQLSTATES = ("40001", "40P01")

RETRY_AFTER_SECONDS = 1
FIELDS = ("thermos_job_id", "job_class", "org_id", "project_id", "job_type")
LIST_PARAMS = ("org_id", "project_id", "include_project_jobs", "job_type", "starting_after", "limit")
LIST_DEFAULTS: Mapping[str, str] = {"include_project_jobs": "false", "limit": "50"}


def status_of(sqlstate: str) -> int:
    return STATUS_BY_SQLSTATE.get(sqlstate, STATUS_BY_SQLSTATE_CLASS.get(sqlstate[:2], 500))


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    sqlstate: str | None = None


def connect(conninfo: str = "", **kwargs: Any) -> psycopg.Connection:
    """A connection as the service uses it (libpq reads PGHOST, PGPORT, PGUSER, ...).

    prepare_threshold=None: psycopg never prepares a named server-side
    statement. By default it prepares a query after its 5th execution on a
    connection and then runs it by name; behind a pooler in transaction mode
    (pgbouncer's pool_mode = transaction) each transaction may get another
    server session, where that name does not exist (26000) or is another
    client's (42P05). Unnamed statements cost nothing here: the statements
    are one function call each, and the extension keeps its own plans.
    """
    kwargs.setdefault("prepare_threshold", None)
    return psycopg.connect(
        conninfo, autocommit=True, cursor_factory=psycopg.RawCursor, row_factory=dict_row, **kwargs
    )


def error_response(err: Exception) -> Response:
    """The response for a failed statement. Only 400s repeat the database's
    message (it names the caller's own argument, never another tenant's data)."""
    sqlstate = err.sqlstate if isinstance(err, psycopg.Error) else None
    if sqlstate is None:
        # no SQLSTATE: the database could not be reached or the connection broke
        return Response(503, {"error": "unavailable"}, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    status = status_of(sqlstate)
    if status == 400:
        message = err.diag.message_primary if isinstance(err, psycopg.Error) else str(err)
        return Response(400, {"error": "invalid_argument", "message": message}, sqlstate=sqlstate)
    if status == 404:
        return Response(404, {"error": "not_found", "message": "org or project not found"}, sqlstate=sqlstate)
    if status == 409:
        return Response(409, {"error": "conflict"}, sqlstate=sqlstate)
    if status == 503:
        return Response(503, {"error": "unavailable"}, {"Retry-After": str(RETRY_AFTER_SECONDS)}, sqlstate)
    return Response(500, {"error": "internal"}, sqlstate=sqlstate)


RetryHook = Callable[[int, psycopg.Error], None]


def execute_with_retry(
    conn: psycopg.Connection,
    sql: str,
    args: Iterable[Any],
    *,
    max_attempts: int = 3,
    on_retry: RetryHook | None = None,
) -> psycopg.Cursor:
    """conn.execute(sql, args), attempted again after 40001/40P01 up to
    max_attempts in all. In autocommit mode each attempt is a new transaction
    with a fresh snapshot: after a lost registration race it finds the
    winner's job. Other errors are raised at once."""
    args = list(args)
    attempt = 0
    while True:
        attempt += 1
        try:
            return conn.execute(sql, args)
        except psycopg.Error as err:
            if err.sqlstate in RETRY_SQLSTATES and attempt < max_attempts:
                if on_retry:
                    on_retry(attempt, err)
                time.sleep(0.01 * 2**attempt * random.random())
                continue
            raise


def _job_body(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": row["created_at"].isoformat()}


def create_job(
    conn: psycopg.Connection,
    body: Mapping[str, Any],
    *,
    max_attempts: int = 3,
    on_retry: RetryHook | None = None,
) -> Response:
    """POST /v1/jobs."""
    if not isinstance(body, Mapping):
        return Response(400, {"error": "invalid_argument", "message": "body must be a JSON object"})
    for f in FIELDS:
        if body.get(f) is not None and not isinstance(body[f], str):
            return Response(400, {"error": "invalid_argument", "message": f"{f} must be a string or null"})
    args = [body.get(f) for f in FIELDS]
    try:
        row = execute_with_retry(conn, UPSERT_JOB, args, max_attempts=max_attempts, on_retry=on_retry).fetchone()
    except psycopg.Error as err:
        return error_response(err)
    assert row is not None  # the function always returns one row
    location = f"/v1/jobs/{row['job_id']}?org_id={args[2]}" + (f"&project_id={args[3]}" if args[3] else "")
    return Response(
        202 if row["created"] else 409,
        {"job_id": row["job_id"], "created": row["created"]},
        {"Location": location},
    )


def get_job(
    conn: psycopg.Connection,
    job_id: str,
    org_id: str | None,
    project_id: str | None = None,
    *,
    max_attempts: int = 3,
    on_retry: RetryHook | None = None,
) -> Response:
    """GET /v1/jobs/<job_id>?org_id=...&project_id=..."""
    try:
        row = execute_with_retry(
            conn, JOB_BY_ID, [job_id, org_id, project_id], max_attempts=max_attempts, on_retry=on_retry
        ).fetchone()
    except psycopg.Error as err:
        return error_response(err)
    if row is None:
        return Response(404, {"error": "not_found"})
    return Response(200, _job_body(row))


def list_jobs(
    conn: psycopg.Connection,
    params: Mapping[str, str | None],
    *,
    max_attempts: int = 3,
    on_retry: RetryHook | None = None,
) -> Response:
    """GET /v1/jobs?org_id=&project_id=&include_project_jobs=&job_type=&starting_after=&limit=

    params maps the query parameters to strings (absent: missing or None);
    they go to the server as text, which parses the flag and the limit.

    Paging (Stripe-style, as in the node-postgres example): has_more is true
    when the page is full (limit rows), and next_cursor is then its last
    job_id, to pass as starting_after; otherwise has_more is false and
    next_cursor None. This is the extension's own rule (a page shorter than
    page_size is the last one), so the limit is sent as it is and the
    extension alone checks its range (1..1000, 22023). The price: when the
    jobs fill the last page exactly, has_more is true once more and the page
    after it is empty. (Asking for limit + 1 rows would make has_more exact but
    cap limit at 999 and move the range check here.)
    """

    def value(name: str) -> str | None:
        v = params.get(name)
        return LIST_DEFAULTS.get(name) if v is None else v

    try:
        rows = execute_with_retry(
            conn, LIST_JOBS, [value(n) for n in LIST_PARAMS], max_attempts=max_attempts, on_retry=on_retry
        ).fetchall()
    except psycopg.Error as err:
        return error_response(err)
    # the server accepted the limit, so it is the text of an integer in 1..1000
    has_more = len(rows) == int(value("limit"))  # type: ignore[arg-type]
    return Response(
        200,
        {"data": [_job_body(r) for r in rows], "has_more": has_more, "next_cursor": rows[-1]["job_id"] if has_more else None},
    )


def _bad_request(message: str) -> Response:
    return Response(400, {"error": "invalid_argument", "message": message})


class JobsService:
    """The endpoints over one connection, for a whole process (two with a replica).

    The connection is opened on first use. When the server ends it
    (pg_terminate_backend, a restart, a failover: 57P01/57P02, a class 08
    error, a socket that breaks without a SQLSTATE), psycopg marks it closed
    and the request that met it answers 503 with Retry-After; the next request
    opens a new connection instead of failing on the dead one forever. A
    database that cannot be reached is a 503 as well, and is tried again on
    each request. Requests are served one at a time (one connection).

    replica: a conninfo for a hot standby (e.g. "host=replica1,replica2
    target_session_attrs=prefer-standby", which libpq lets fall back to the
    primary). The listing and the getter then read there; registrations
    always go to the primary (conninfo; with several hosts, add
    target_session_attrs=read-write so libpq skips the standbys). A replica
    lags: the listing may not show a job registered a moment ago, or may still
    show one whose project was soft-deleted, until the replica has replayed
    it. The getter asks the primary again when the replica has no such job,
    so a client polling the job it just registered finds it (a 404 costs a
    second query). A write that meets a read-only server (25006: the
    "primary" is a standby after a failover, or a misrouted connection) is a
    503 with Retry-After like any routing error, and the connection is
    dropped: the next request connects anew and, with the read-write
    conninfo above, finds the server that now accepts writes.
    """

    def __init__(
        self,
        conninfo: str = "",
        *,
        replica: str | None = None,
        max_attempts: int = 3,
        on_retry: RetryHook | None = None,
        log: Callable[[str], None] | None = None,
        **connect_kwargs: Any,
    ) -> None:
        self._conninfo = conninfo
        self._replica_conninfo = replica
        self._connect_kwargs = connect_kwargs
        self._retry = {"max_attempts": max_attempts, "on_retry": on_retry}
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._replica_conn: psycopg.Connection | None = None
        self.connects = 0  # connections to the primary opened so far
        self.replica_connects = 0  # and to the replica

    @property
    def connection(self) -> psycopg.Connection | None:
        """The current connection (None before the first request or after a failed connect)."""
        return self._conn

    @property
    def replica_connection(self) -> psycopg.Connection | None:
        """The replica's connection (None without a replica, or before the first read)."""
        return self._replica_conn

    def _connection(self, replica: bool) -> psycopg.Connection:
        conn = self._replica_conn if replica else self._conn
        if conn is not None and conn.closed:
            self._log(f"jobs_api: the {'replica' if replica else 'database'} connection was lost; opening a new one")
            conn = None
        if conn is None:
            conn = connect(self._replica_conninfo if replica else self._conninfo, **self._connect_kwargs)
            if replica:
                self.replica_connects += 1
            else:
                self.connects += 1
        if replica:
            self._replica_conn = conn
        else:
            self._conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._replica_conn):
                if conn is not None:
                    conn.close()
            self._conn = self._replica_conn = None

    def handle(self, method: str, path: str, query: str = "", body: bytes = b"") -> Response:
        """One request: method, path (percent-encoded), query string, body."""
        with self._lock:
            return self._route(method, path, query, body)

    def _call(self, read: bool, endpoint: Callable[[psycopg.Connection], Response]) -> Response:
        """endpoint(connection): on the replica's connection for a read when
        there is a replica, else on the primary's."""
        replica = read and self._replica_conninfo is not None
        try:
            conn = self._connection(replica)
        except psycopg.Error as err:
            return error_response(err)
        response = endpoint(conn)
        sqlstate = response.sqlstate or ""
        # A connection that reported its own end is useless even if libpq has
        # not noticed yet, and a "primary" that refused a write (25006) is a
        # standby: drop it so the next request connects anew.
        if sqlstate in ("57P01", "57P02", "57P03") or sqlstate.startswith("08") or (sqlstate == "25006" and not replica):
            conn.close()
        return response

    def _route(self, method: str, path: str, query: str, body: bytes) -> Response:
        if method == "POST" and path == "/v1/jobs":
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                payload = None
            return self._call(False, lambda conn: create_job(conn, payload, **self._retry))  # type: ignore[arg-type]
        if method == "GET" and path == "/v1/jobs":
            pairs = parse_qsl(query, keep_blank_values=True)
            names = [k for k, _ in pairs]
            unknown = [n for n in names if n not in LIST_PARAMS]
            if unknown:  # a misspelt starting_after would restart at page 1
                return _bad_request(f"unknown query parameter: {unknown[0]}")
            repeated = [n for i, n in enumerate(names) if n in names[:i]]
            if repeated:
                return _bad_request(f"query parameter given twice: {repeated[0]}")
            return self._call(True, lambda conn: list_jobs(conn, dict(pairs), **self._retry))
        m = re.fullmatch(r"/v1/jobs/([^/]+)", path)
        if method == "GET" and m:
            try:
                job_id = unquote(m.group(1), errors="strict")
            except UnicodeDecodeError:
                return Response(404, {"error": "not_found"})  # no job has this id
            q = dict(parse_qsl(query, keep_blank_values=True))

            def poll(conn: psycopg.Connection) -> Response:
                return get_job(conn, job_id, q.get("org_id"), q.get("project_id"), **self._retry)

            r = self._call(True, poll)
            if r.status == 404 and self._replica_conninfo is not None:
                # the replica may not have replayed a job registered a moment ago
                r = self._call(False, poll)
            return r
        return Response(404, {"error": "no_route"})

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """WSGI."""
        # PATH_INFO arrives percent-decoded as latin-1; encode it back for _route.
        raw_path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        path = re.sub(r"[^A-Za-z0-9_\-./~]", lambda c: "".join(f"%{b:02X}" for b in c.group().encode()), raw_path)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(min(length, 64 * 1024)) if length else b""
        r = self.handle(environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""), body)
        self._log(f"{environ['REQUEST_METHOD']} {raw_path} -> {r.status}" + (f" ({r.sqlstate})" if r.sqlstate else ""))
        reasons = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 409: "Conflict",
                   500: "Internal Server Error", 503: "Service Unavailable"}
        start_response(f"{r.status} {reasons.get(r.status, '')}".strip(),
                       [("Content-Type", "application/json"), *r.headers.items()])
        return [json.dumps(r.body).encode("utf-8")]


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    replica = None
    if os.environ.get("PGREPLICA_HOST"):
        replica = make_conninfo(host=os.environ["PGREPLICA_HOST"], port=os.environ.get("PGREPLICA_PORT"))
    service = JobsService(replica=replica)
    port = int(os.environ.get("PORT", "8080"))
    with make_server("127.0.0.1", port, service) as server:
        print(f"listening on 127.0.0.1:{port}", file=sys.stderr)
        server.serve_forever()
