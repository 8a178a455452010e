'use strict';
// What the API's job endpoints do with apollo_jobs, over node-postgres:
//
//   POST /v1/jobs            {thermos_job_id, job_class, org_id, project_id, job_type}
//        -> 202 {job_id, created: true}   a new job for this workflow
//        -> 409 {job_id, created: false}  the workflow's job already exists (same id)
//   GET  /v1/jobs/:job_id?org_id=...[&project_id=...]
//        -> 200 {job}  or  404 (not this tenant's, soft-deleted, unknown, malformed)
//   GET  /v1/jobs?org_id=...[&project_id=...][&include_project_jobs=true|false]
//                [&job_type=...][&starting_after=<job_id>][&limit=1..1000]
//        -> 200 {data: [job...], has_more, next_cursor}   newest first
//
// Every other outcome is a PostgreSQL error whose SQLSTATE picks the status
// (statusOf). The service does no validation of its own: the extension checks
// every argument and says which one is wrong (22004/22023), and the server
// parses the listing's boolean and integer parameters (22P02/22003). In a
// real service org_id/project_id come from the caller's credentials, not from
// the body or the query string, and the service has already checked that the
// project belongs to the org (the extension's FKs prove existence only).
//
// Run it: PGHOST=... PGDATABASE=... PGUSER=apollo_api PORT=8080 node jobs_api.js
// With PGREPLICA_HOST (and PGREPLICA_PORT) set, the reads (both GETs) go to
// that hot standby and only the registrations (POST) to the primary: see
// createPools.

const http = require('node:http');
const { DatabaseError, Pool } = require('pg');
const { UPSERT_JOB, JOB_BY_ID, LIST_JOBS } = require('./sql');

/**
 * SQLSTATE -> HTTP status. PRISMA.md carries the same table (checked by
 * prisma_doc.test.js) and so does the psycopg example. Anything not here
 * (and not in STATUS_BY_SQLSTATE_CLASS) is a 500.
 */
const STATUS_BY_SQLSTATE = Object.freeze({
  '22003': 400, // a listing limit beyond integer (the server's parse of the parameter)
  '22004': 400, // a required argument is NULL
  '22021': 400, // not UTF-8 (only in a non-UTF-8 database)
  '22023': 400, // empty/overlong text, unknown job_class, project_id vs class, bad job_type, bad cursor or page size
  '22P02': 400, // malformed job id (job_class_of); a listing flag or limit that is not a boolean / integer
  '23514': 400, // domain or CHECK violation
  '23503': 404, // unknown org or project: the URL names something that does not exist
  '23505': 409, // thermos_job_id registered by a different job; nothing more is said
  '40001': 503, // serialization failure: retried first, 503 + Retry-After when retries run out
  '40P01': 503, // deadlock: retried first, 503 + Retry-After when retries run out
  '25006': 503, // read-only server (a standby, or read-only transactions): writes go to the primary
  '55P03': 503, // lock_timeout, e.g. behind a DBA's ALTER TABLE on apollo_jobs.jobs
  '57014': 503, // statement_timeout or a cancel
  '57P01': 503, // the session was terminated (pg_terminate_backend, shutdown, failover): the pool reconnects
  '57P02': 503, // crash shutdown: the pool reconnects
  '57P03': 503, // the server is starting up or shutting down
  '55000': 503, // apollo_jobs.jobs not created yet, a broken scope binding, the extension not updated
  '0A000': 500, // an UPDATE of apollo_jobs.jobs, a non-UTF8 database: the deployment is wrong
  '27000': 500, // a trigger or rule on apollo_jobs.jobs swallowed the registration
  '42501': 500, // the service's role lacks the documented grants
  '58000': 500, // the server's random source failed
});

/** SQLSTATE class -> HTTP status, for the codes STATUS_BY_SQLSTATE does not name. */
const STATUS_BY_SQLSTATE_CLASS = Object.freeze({
  '08': 503, // connection exception: the pool drops the connection and opens a new one
});

/** Retried (as a whole transaction: each attempt here is one autocommit statement) before they become a 503. */
const RETRY_SQLSTATES = Object.freeze(['40001', '40P01']);

const RETRY_AFTER_SECONDS = 1;

const statusOf = (sqlstate) =>
  STATUS_BY_SQLSTATE[sqlstate] ?? STATUS_BY_SQLSTATE_CLASS[sqlstate.slice(0, 2)] ?? 500;

/** The SQLSTATE of a failed query, or null when the failure was not the server's. */
function sqlstateOf(err) {
  // Only a DatabaseError carries a SQLSTATE; node's own errors (ECONNREFUSED,
  // EPIPE, ...) have a `code` too, of another kind.
  return err instanceof DatabaseError && typeof err.code === 'string' ? err.code : null;
}

/**
 * The response for a failed statement: { status, body, headers }. Only 400s
 * repeat the database's message (it names the caller's own argument and never
 * another tenant's data); everything else has a fixed body.
 */
function errorResponse(err) {
  const sqlstate = sqlstateOf(err);
  // no SQLSTATE: the database could not be reached or the connection broke
  const status = sqlstate === null ? 503 : statusOf(sqlstate);
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

/**
 * db.query(text, args), attempted again after 40001/40P01 up to maxAttempts
 * in all. Each attempt is one autocommit statement (a pool.query), so a retry
 * is a new transaction with a fresh snapshot: after a lost registration race
 * it finds the winner's job. Other errors are thrown at once.
 */
async function queryWithRetry(db, text, args, { maxAttempts = 3, onRetry = () => {} } = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.query(text, args);
    } catch (err) {
      if (RETRY_SQLSTATES.includes(sqlstateOf(err)) && attempt < maxAttempts) {
        onRetry(attempt, err);
        await sleep(10 * 2 ** attempt * Math.random());
        continue;
      }
      throw err;
    }
  }
}

function jobLocation(jobId, orgId, projectId) {
  const q = new URLSearchParams({ org_id: orgId });
  if (projectId !== null) q.set('project_id', projectId);
  return `/v1/jobs/${encodeURIComponent(jobId)}?${q}`;
}

const jobBody = (row) => ({ ...row, created_at: row.created_at.toISOString() });

/** POST /v1/jobs. `db` is a pg.Pool (or anything with query()). */
async function createJob(db, input, options = {}) {
  const args = [input.thermos_job_id, input.job_class, input.org_id, input.project_id, input.job_type]
    .map((v) => (v === undefined ? null : v));
  try {
    const { rows } = await queryWithRetry(db, UPSERT_JOB, args, options);
    const { job_id: jobId, created } = rows[0];
    return {
      status: created ? 202 : 409,
      body: { job_id: jobId, created },
      headers: { Location: jobLocation(jobId, args[2], args[3]) },
    };
  } catch (err) {
    return errorResponse(err);
  }
}

/** GET /v1/jobs/:job_id?org_id=&project_id= */
async function getJob(db, jobId, orgId, projectId, options = {}) {
  try {
    const { rows } = await queryWithRetry(db, JOB_BY_ID, [jobId, orgId ?? null, projectId ?? null], options);
    if (rows.length === 0) return { status: 404, body: { error: 'not_found' }, headers: {} };
    return { status: 200, body: jobBody(rows[0]), headers: {} };
  } catch (err) {
    return errorResponse(err);
  }
}

/** The listing's query parameters; any other name is a 400 (a misspelt starting_after would restart at page 1). */
const LIST_PARAMS = ['org_id', 'project_id', 'include_project_jobs', 'job_type', 'starting_after', 'limit'];
const LIST_DEFAULTS = Object.freeze({ include_project_jobs: 'false', limit: '50' });

/**
 * GET /v1/jobs?org_id=&project_id=&include_project_jobs=&job_type=&starting_after=&limit=
 * `query` maps parameter names to strings (absent: undefined or null).
 *
 * Paging (Stripe-style): has_more is true when the page is full (limit rows),
 * and next_cursor is then its last job_id, to pass as starting_after;
 * otherwise has_more is false and next_cursor null. This is the extension's
 * own rule (a page shorter than page_size is the last one), so the limit is
 * sent as it is and the extension alone checks its range (1..1000, 22023).
 * The price: when the jobs fill the last page exactly, has_more is true once
 * more and the page after it is empty. (Asking for limit + 1 rows would make
 * has_more exact but cap limit at 999 and move the range check here.)
 */
async function listJobs(db, query, options = {}) {
  const value = (name) => query[name] ?? LIST_DEFAULTS[name] ?? null;
  const args = LIST_PARAMS.map(value);
  try {
    const { rows } = await queryWithRetry(db, LIST_JOBS, args, options);
    // the server accepted the limit, so it is the text of an integer in 1..1000
    const hasMore = rows.length === Number(value('limit'));
    return {
      status: 200,
      body: { data: rows.map(jobBody), has_more: hasMore, next_cursor: hasMore ? rows[rows.length - 1].job_id : null },
      headers: {},
    };
  } catch (err) {
    return errorResponse(err);
  }
}

/**
 * A pg.Pool for the service. An idle pooled connection that the server ends
 * (pg_terminate_backend, a restart, a failover: 57P01, or a broken socket)
 * emits 'error' on the pool, and an 'error' event without a listener ends the
 * node process. The pool has already dropped that connection and opens a new
 * one for the next request, so the listener only logs. A connection that
 * breaks during a query fails that query (503 via errorResponse) and is
 * dropped on release the same way.
 */
function createPool(config = {}, { onError = (err) => console.error(`pool: idle connection lost: ${err.message}`) } = {}) {
  const pool = new Pool(config);
  pool.on('error', (err) => onError(err));
  return pool;
}

/**
 * The service's pools: registrations (POST) go to `primary`, reads (both
 * GETs) to `replica`, a hot standby, when one is configured; each is a
 * node-postgres config. It has query() (the primary's), so it serves
 * wherever a single pool does.
 *
 * A replica lags: the listing may not show a job registered a moment ago, or
 * may still show one whose project was soft-deleted, until the replica has
 * replayed it. The getter asks the primary again when the replica has no
 * such job (createServer), so a client polling the job it just registered
 * finds it (a 404 costs a second query).
 *
 * A write that meets a read-only server (25006: the "primary" is a standby
 * after a failover, or a misrouted connection) is answered 503 with
 * Retry-After like any routing error, and replacePrimary() ends the primary
 * pool and opens a new one: its connections are made anew, to whatever
 * server the primary's address names by then (a DNS name or virtual IP that
 * the failover moves; node-postgres takes one host, no
 * target_session_attrs), instead of the pooled ones that still reach the
 * standby.
 */
class Pools {
  constructor({ primary = {}, replica = null } = {}, hooks = {}) {
    this.primaryConfig = primary;
    this.hooks = hooks;
    this.primary = createPool(primary, hooks);
    this.replica = replica === null ? null : createPool(replica, hooks);
    this.primaryPools = 1; // primary pools opened so far
  }

  query(text, args) {
    return this.primary.query(text, args);
  }

  replacePrimary() {
    const old = this.primary;
    this.primary = createPool(this.primaryConfig, this.hooks);
    this.primaryPools += 1;
    // ends once the requests that still hold its connections are done
    old.end().catch(() => {});
  }

  async end() {
    await Promise.all([this.primary.end(), this.replica?.end()]);
  }
}

const createPools = (config, hooks) => new Pools(config, hooks);

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

const badRequest = (message) => ({ status: 400, body: { error: 'invalid_argument', message }, headers: {} });

/**
 * The HTTP server over `db`: a pg.Pool (everything on it) or createPools'
 * Pools (reads on its replica, if any). options: { maxAttempts, onRetry,
 * log(response, req) }.
 */
function createServer(db, options = {}) {
  const log = options.log ?? (() => {});
  const reader = db.replica ?? db;
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
        response = bad ? badRequest(bad) : await createJob(db, input, options);
        if (response.sqlstate === '25006' && typeof db.replacePrimary === 'function') db.replacePrimary();
      } else if (req.method === 'GET' && url.pathname === '/v1/jobs') {
        const names = [...url.searchParams.keys()];
        const unknown = names.find((n) => !LIST_PARAMS.includes(n));
        const repeated = names.find((n, i) => names.indexOf(n) !== i);
        response = unknown !== undefined ? badRequest(`unknown query parameter: ${unknown}`)
          : repeated !== undefined ? badRequest(`query parameter given twice: ${repeated}`)
            : await listJobs(reader, Object.fromEntries(url.searchParams), options);
      } else if (req.method === 'GET' && jobPath) {
        let jobId = null;
        try {
          jobId = decodeURIComponent(jobPath[1]);
        } catch {
          // not even percent-encoding: no job has this id
        }
        const poll = (pool) => getJob(pool, jobId, url.searchParams.get('org_id'), url.searchParams.get('project_id'), options);
        if (jobId === null) {
          response = { status: 404, body: { error: 'not_found' }, headers: {} };
        } else {
          response = await poll(reader);
          // the replica may not have replayed a job registered a moment ago
          if (response.status === 404 && reader !== db) response = await poll(db);
        }
      } else {
        response = { status: 404, body: { error: 'no_route' }, headers: {} };
      }
    } catch (err) {
      response = { status: 500, body: { error: 'internal' }, headers: {}, sqlstate: sqlstateOf(err) };
    }
    log(response, req);
    res.writeHead(response.status, { 'Content-Type': 'application/json', ...response.headers });
    res.end(JSON.stringify(response.body));
  });
}

module.exports = {
  STATUS_BY_SQLSTATE,
  STATUS_BY_SQLSTATE_CLASS,
  RETRY_SQLSTATES,
  statusOf,
  errorResponse,
  queryWithRetry,
  createJob,
  getJob,
  listJobs,
  createPool,
  createPools,
  Pools,
  createServer,
};

if (require.main === module) {
  // node-postgres reads PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD.
  const max = Number(process.env.POOL_SIZE ?? 10);
  const replica = process.env.PGREPLICA_HOST
    ? { max, host: process.env.PGREPLICA_HOST, port: Number(process.env.PGREPLICA_PORT ?? 5432) } : null;
  const pool = createPools({ primary: { max }, replica });
  const port = Number(process.env.PORT ?? 8080);
  createServer(pool, {
    log: (r, req) => console.log(`${req.method} ${req.url} -> ${r.status}${r.sqlstate ? ` (${r.sqlstate})` : ''}`),
  }).listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}
