"""What the API's job endpoints do with apollo_jobs, over psycopg 3.

    POST /v1/jobs           {thermos_job_id, job_class, org_id, project_id, job_type}
         -> 202 {job_id, created: true}    a new job for this workflow
         -> 409 {job_id, created: false}   the workflow's job already exists (same id)
    GET  /v1/jobs/<job_id>?org_id=...[&project_id=...]
         -> 200 {job}  or  404 (not this tenant's, soft-deleted, unknown, malformed)

Any other outcome is a PostgreSQL error whose SQLSTATE picks the status
(STATUS_BY_SQLSTATE, the same table as the node-postgres example and
PRISMA.md). The service does no validation of its own: the extension checks
every argument and names the wrong one (22004/22023). In a real service
org_id/project_id come from the caller's credentials, and the service has
already checked that the project belongs to the org (the extension's FKs
prove existence only).

The SQL text comes from ../sql/jobs.sql, shared with the node-postgres
example; its $1..$n placeholders go to the server as they are through
psycopg's RawCursor. Connections are in autocommit mode, so each attempt is
one statement with a fresh snapshot, which is what a retry after 40001 needs.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import psycopg
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

STATUS_BY_SQLSTATE: Mapping[str, int] = {
    "22004": 400,  # a required argument is NULL
    "22021": 400,  # not UTF-8 (only in a non-UTF-8 database)
    "22023": 400,  # empty/overlong text, unknown job_class, project_id vs class, bad job_type
    "22P02": 400,  # malformed job id (job_class_of)
    "23514": 400,  # domain or CHECK violation
    "23503": 404,  # unknown org or project
    "23505": 409,  # thermos_job_id registered by a different job; nothing more is said
    "40001": 503,  # concurrent registration: retried first, 503 + Retry-After when retries run out
    "55000": 503,  # apollo_jobs.jobs not created yet (migration not applied)
    "42501": 500,  # the service's role lacks the documented grants
}

RETRY_AFTER_SECONDS = 1
FIELDS = ("thermos_job_id", "job_class", "org_id", "project_id", "job_type")


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    sqlstate: str | None = None


def connect(conninfo: str = "", **kwargs: Any) -> psycopg.Connection:
    """A connection as the service uses it (libpq reads PGHOST, PGPORT, PGUSER, ...)."""
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
    status = STATUS_BY_SQLSTATE.get(sqlstate, 500)
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


def create_job(
    conn: psycopg.Connection,
    body: Mapping[str, Any],
    *,
    max_attempts: int = 3,
    on_retry: Callable[[int, psycopg.Error], None] | None = None,
) -> Response:
    """POST /v1/jobs."""
    if not isinstance(body, Mapping):
        return Response(400, {"error": "invalid_argument", "message": "body must be a JSON object"})
    for f in FIELDS:
        if body.get(f) is not None and not isinstance(body[f], str):
            return Response(400, {"error": "invalid_argument", "message": f"{f} must be a string or null"})
    args = [body.get(f) for f in FIELDS]
    attempt = 0
    while True:
        attempt += 1
        try:
            row = conn.execute(UPSERT_JOB, args).fetchone()
        except psycopg.errors.SerializationFailure as err:
            if attempt < max_attempts:
                if on_retry:
                    on_retry(attempt, err)
                time.sleep(0.01 * 2**attempt * random.random())
                continue
            return error_response(err)
        except psycopg.Error as err:
            return error_response(err)
        assert row is not None  # the function always returns one row
        location = f"/v1/jobs/{row['job_id']}?org_id={args[2]}" + (f"&project_id={args[3]}" if args[3] else "")
        return Response(
            202 if row["created"] else 409,
            {"job_id": row["job_id"], "created": row["created"]},
            {"Location": location},
        )


def get_job(conn: psycopg.Connection, job_id: str, org_id: str | None, project_id: str | None = None) -> Response:
    """GET /v1/jobs/<job_id>?org_id=...&project_id=..."""
    try:
        row = conn.execute(JOB_BY_ID, [job_id, org_id, project_id]).fetchone()
    except psycopg.Error as err:
        return error_response(err)
    if row is None:
        return Response(404, {"error": "not_found"})
    return Response(200, {**row, "created_at": row["created_at"].isoformat()})
