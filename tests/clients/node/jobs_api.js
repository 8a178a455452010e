'use strict';
// What the API's job endpoints do with apollo_jobs, over node-postgres:
//
//   POST /v1/jobs            {thermos_job_id, job_class, org_id, project_id, job_type}
//        -> 202 {job_id, created: true}   a new job for this workflow
//        -> 409 {job_id, created: false}  the workflow's job already exists (same id)
//   GET  /v1/jobs/:job_id?org_id=...[&project_id=...]
//        -> 200 {job}  or  404 (not this tenant's, soft-deleted, unknown, malformed)
//
// Every other outcome is a PostgreSQL error whose SQLSTATE picks the status
// (STATUS_BY_SQLSTATE). The service does no validation of its own: the
// extension checks every argument and says which one is wrong (22004/22023).
// In a real service org_id/project_id come from the caller's credentials, not
// from the body or the query string, and the service has already checked that
// the project belongs to the org (the extension's FKs prove existence only).
//
// Run it: PGHOST=... PGDATABASE=... PGUSER=apollo_api PORT=8080 node jobs_api.js

const http = require('node:http');
const { DatabaseError, Pool } = require('pg');
const { UPSERT_JOB, JOB_BY_ID } = require('./sql');

/**
 * SQLSTATE -> HTTP status. PRISMA.md carries the same table (checked by
 * prisma_doc.test.js) and so does the psycopg example.
 */
const STATUS_BY_SQLSTATE = Object.freeze({
  '22004': 400, // a required argument is NULL
  '22021': 400, // not UTF-8 (only in a non-UTF-8 database)
  '22023': 400, // empty/overlong text, unknown job_class, project_id vs class, bad job_type
  '22P02': 400, // malformed job id (job_class_of)
  '23514': 400, // domain or CHECK violation
  '23503': 404, // unknown org or project: the URL names something that does not exist
  '23505': 409, // thermos_job_id registered by a different job; nothing more is said
  '40001': 503, // concurrent registration: retried first, 503 + Retry-After when retries run out
  '55000': 503, // apollo_jobs.jobs not created yet (migration not applied)
  '42501': 500, // the service's role lacks the documented grants
});

const RETRY_AFTER_SECONDS = 1;

/**
 * The response for a failed statement: { status, body, headers }. Only 400s
 * repeat the database's message (it names the caller's own argument and never
 * another tenant's data); everything else has a fixed body.
 */
function errorResponse(err) {
  // Only a DatabaseError carries a SQLSTATE; node's own errors (ECONNREFUSED,
  // EPIPE, ...) have a `code` too, of another kind.
  const sqlstate = err instanceof DatabaseError ? err.code : null;
  if (sqlstate === null) {
    // the database could not be reached or the connection broke
    return { status: 503, body: { error: 'unavailable' }, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) }, sqlstate };
  }
  const status = STATUS_BY_SQLSTATE[sqlstate] ?? 500;
  switch (status) {
    case 400:
      return { status, body: { error: 'invalid_argument', message: err.message }, headers: {}, sqlstate };
    case 404:
      return { status, body: { error: 'not_found', message: 'org or project not found' }, headers: {}, sqlstate };
    case 409:
      return { status, body: { error: 'conflict' }, headers: {}, sqlstate };
    case 503:
      return { status, body: { error: 'unavailable' }, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) }, sqlstate };
    default:
      return { status: 500, body: { error: 'internal' }, headers: {}, sqlstate };
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function jobLocation(jobId, orgId, projectId) {
  const q = new URLSearchParams({ org_id: orgId });
  if (projectId !== null) q.set('project_id', projectId);
  return `/v1/jobs/${encodeURIComponent(jobId)}?${q}`;
}

/**
 * POST /v1/jobs. `db` is a pg.Pool (or anything with query()). Each attempt
 * is one autocommit statement, so a retry after 40001 runs with a fresh
 * snapshot and finds the winner's job.
 */
async function createJob(db, input, { maxAttempts = 3, onRetry = () => {} } = {}) {
  const args = [input.thermos_job_id, input.job_class, input.org_id, input.project_id, input.job_type]
    .map((v) => (v === undefined ? null : v));
  for (let attempt = 1; ; attempt++) {
    try {
      const { rows } = await db.query(UPSERT_JOB, args);
      const { job_id: jobId, created } = rows[0];
      return {
        status: created ? 202 : 409,
        body: { job_id: jobId, created },
        headers: { Location: jobLocation(jobId, args[2], args[3]) },
      };
    } catch (err) {
      if (err.code === '40001' && attempt < maxAttempts) {
        onRetry(attempt, err);
        await sleep(10 * 2 ** attempt * Math.random());
        continue;
      }
      return errorResponse(err);
    }
  }
}

/** GET /v1/jobs/:job_id?org_id=&project_id= */
async function getJob(db, jobId, orgId, projectId) {
  try {
    const { rows } = await db.query(JOB_BY_ID, [jobId, orgId ?? null, projectId ?? null]);
    if (rows.length === 0) return { status: 404, body: { error: 'not_found' }, headers: {} };
    const job = rows[0];
    return { status: 200, body: { ...job, created_at: job.created_at.toISOString() }, headers: {} };
  } catch (err) {
    return errorResponse(err);
  }
}

const TEXT_FIELDS = ['thermos_job_id', 'job_class', 'org_id', 'project_id', 'job_type'];

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

/** The HTTP server. options: { maxAttempts, onRetry, log(response, req) }. */
function createServer(db, options = {}) {
  const log = options.log ?? (() => {});
  return http.createServer(async (req, res) => {
    let response;
    try {
      const url = new URL(req.url, 'http://localhost');
      const jobPath = /^\/v1\/jobs\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'POST' && url.pathname === '/v1/jobs') {
        let input;
        try {
          input = await readJson(req);
        } catch {
          input = null;
        }
        const bad = input === null || typeof input !== 'object' || Array.isArray(input)
          ? 'body must be a JSON object'
          : TEXT_FIELDS.filter((f) => input[f] !== undefined && input[f] !== null && typeof input[f] !== 'string')
            .map((f) => `${f} must be a string or null`)[0];
        response = bad
          ? { status: 400, body: { error: 'invalid_argument', message: bad }, headers: {} }
          : await createJob(db, input, options);
      } else if (req.method === 'GET' && jobPath) {
        let jobId = null;
        try {
          jobId = decodeURIComponent(jobPath[1]);
        } catch {
          // not even percent-encoding: no job has this id
        }
        response = jobId === null
          ? { status: 404, body: { error: 'not_found' }, headers: {} }
          : await getJob(db, jobId, url.searchParams.get('org_id'), url.searchParams.get('project_id'));
      } else {
        response = { status: 404, body: { error: 'no_route' }, headers: {} };
      }
    } catch (err) {
      response = { status: 500, body: { error: 'internal' }, headers: {}, sqlstate: err?.code ?? null };
    }
    log(response, req);
    res.writeHead(response.status, { 'Content-Type': 'application/json', ...response.headers });
    res.end(JSON.stringify(response.body));
  });
}

module.exports = { STATUS_BY_SQLSTATE, errorResponse, createJob, getJob, createServer };

if (require.main === module) {
  // node-postgres reads PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD.
  const pool = new Pool({ max: Number(process.env.POOL_SIZE ?? 10) });
  const port = Number(process.env.PORT ?? 8080);
  createServer(pool, {
    log: (r, req) => console.log(`${req.method} ${req.url} -> ${r.status}${r.sqlstate ? ` (${r.sqlstate})` : ''}`),
  }).listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}
