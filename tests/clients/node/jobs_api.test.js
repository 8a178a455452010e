'use strict';
// The example API (jobs_api.js) over HTTP on 127.0.0.1, against the scratch
// cluster: create/poll, dedup under concurrency, and the SQLSTATE -> HTTP
// mapping with real errors from the extension.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('pg');
const { createServer, errorResponse, STATUS_BY_SQLSTATE } = require('./jobs_api');
const { UPSERT_JOB, JOB_BY_ID } = require('./sql');
const { freshDatabase, withClient, pool, waitFor } = require('./db');

const DB = 'node_api';
const DB_NO_TABLE = 'node_api_no_table';
const JOB_ID = /^(oj|pj)_[0-9A-Za-z]{21}$/;

const pools = [];
const servers = [];
const retries = { rc: [], rr: [], rr1: [] };

/** Starts the API over a pool for `user`; returns its base URL. */
async function startApi(user, database, options = {}, max = 10) {
  const db = pool(user, database, max);
  pools.push(db);
  const server = createServer(db, options);
  servers.push(server);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${server.address().port}`;
}

async function call(base, method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

const post = (base, body) => call(base, 'POST', '/v1/jobs', body);
const get = (base, jobId, orgId, projectId) => {
  const q = new URLSearchParams();
  if (orgId !== undefined) q.set('org_id', orgId);
  if (projectId !== undefined) q.set('project_id', projectId);
  return call(base, 'GET', `/v1/jobs/${encodeURIComponent(jobId)}?${q}`);
};

const orgJob = (thermos, overrides = {}) => ({
  thermos_job_id: thermos, job_class: 'org', org_id: 'org_acme', project_id: null, job_type: 'batch_revoke', ...overrides,
});
const projectJob = (thermos, overrides = {}) => ({
  thermos_job_id: thermos, job_class: 'project', org_id: 'org_acme', project_id: 'prj_acme_web', job_type: 'batch_revoke', ...overrides,
});

let api; // apollo_api, READ COMMITTED
let apiRR; // apollo_api_rr, REPEATABLE READ, up to 5 attempts
let apiRR1; // apollo_api_rr, one attempt only
let apiNoTable; // database without apollo_jobs.jobs
let apiNoGrants; // apollo_nobody

before(async () => {
  await freshDatabase(DB);
  await freshDatabase(DB_NO_TABLE, { jobsTable: false });
  api = await startApi('apollo_api', DB, { onRetry: (n, e) => retries.rc.push(e.code) }, 12);
  apiRR = await startApi('apollo_api_rr', DB, { maxAttempts: 5, onRetry: (n, e) => retries.rr.push(e.code) }, 12);
  apiRR1 = await startApi('apollo_api_rr', DB, { maxAttempts: 1, onRetry: (n, e) => retries.rr1.push(e.code) }, 2);
  apiNoTable = await startApi('apollo_api', DB_NO_TABLE, {}, 2);
  apiNoGrants = await startApi('apollo_nobody', DB, {}, 2);
});

after(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await Promise.all(pools.map((p) => p.end()));
});

describe('create and poll', () => {
  it('creates an org job: 202, then the same workflow again: 409 with the same id', async () => {
    const first = await post(api, orgJob('wf-org-1'));
    assert.equal(first.status, 202);
    assert.match(first.body.job_id, /^oj_/);
    assert.match(first.body.job_id, JOB_ID);
    assert.equal(first.body.created, true);
    assert.equal(first.headers.get('location'), `/v1/jobs/${first.body.job_id}?org_id=org_acme`);

    const again = await post(api, orgJob('wf-org-1'));
    assert.equal(again.status, 409);
    assert.deepEqual(again.body, { job_id: first.body.job_id, created: false });

    const polled = await get(api, first.body.job_id, 'org_acme');
    assert.equal(polled.status, 200);
    assert.equal(polled.body.job_id, first.body.job_id);
    assert.equal(polled.body.job_class, 'org');
    assert.equal(polled.body.org_id, 'org_acme');
    assert.equal(polled.body.project_id, null);
    assert.equal(polled.body.job_type, 'batch_revoke');
    assert.equal(polled.body.thermos_job_id, 'wf-org-1');
    assert.ok(Date.now() - Date.parse(polled.body.created_at) < 60000);
  });

  it('creates a project job and polls it only with its own scope', async () => {
    const created = await post(api, projectJob('wf-prj-1'));
    assert.equal(created.status, 202);
    assert.match(created.body.job_id, /^pj_[0-9A-Za-z]{21}$/);
    const id = created.body.job_id;

    assert.equal((await get(api, id, 'org_acme', 'prj_acme_web')).status, 200);
    // any other scope: 404, with nothing that tells a stranger the id exists
    for (const [org, prj] of [['org_acme', undefined], ['org_umbrella', 'prj_acme_web'], ['org_umbrella', 'prj_umbrella_lab'], ['org_acme', 'prj_acme_old']]) {
      const r = await get(api, id, org, prj);
      assert.equal(r.status, 404, `${org}/${prj}`);
      assert.deepEqual(r.body, { error: 'not_found' });
    }
  });

  // By design (README, "What the upsert does not decide"): the FK proves the
  // project exists, not whose it is. The API's authorization checks that the
  // caller's project belongs to the caller's org before it calls.
  it('leaves "does this project belong to this org" to the API (202 for a foreign project)', async () => {
    const r = await post(api, projectJob('wf-cross-tenant', { project_id: 'prj_umbrella_lab' }));
    assert.equal(r.status, 202);
    // and the job is only visible under exactly that (org, project) pair
    assert.equal((await get(api, r.body.job_id, 'org_umbrella', 'prj_umbrella_lab')).status, 404);
  });

  it('polls unknown and malformed ids as 404', async () => {
    assert.equal((await get(api, 'oj_000000000000000000000', 'org_acme')).status, 404);
    assert.equal((await get(api, 'not-a-job-id', 'org_acme')).status, 404);
    assert.equal((await get(api, "'; DROP TABLE apollo_jobs.jobs; --", 'org_acme')).status, 404);
    assert.equal((await call(api, 'GET', '/v1/jobs/%E0%A4%A?org_id=org_acme')).status, 404);
  });

  it('hides a job once its project is soft-deleted', async () => {
    const created = await post(api, projectJob('wf-prj-old', { project_id: 'prj_acme_old' }));
    assert.equal(created.status, 202);
    assert.equal((await get(api, created.body.job_id, 'org_acme', 'prj_acme_old')).status, 200);
    await withClient({ user: 'postgres', database: DB }, (c) =>
      c.query("UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_acme_old'"));
    assert.equal((await get(api, created.body.job_id, 'org_acme', 'prj_acme_old')).status, 404);
  });
});

describe('concurrent requests for one workflow', () => {
  for (const [label, base, bucket] of [['READ COMMITTED', () => api, 'rc'], ['REPEATABLE READ, with retries', () => apiRR, 'rr']]) {
    it(`${label}: exactly one 202, every other answer 409 with the same id`, async (t) => {
      const thermos = `wf-burst-${bucket}`;
      const before = retries[bucket].length;
      const answers = await Promise.all(Array.from({ length: 24 }, () => post(base(), projectJob(thermos))));
      const statuses = answers.map((a) => a.status);
      assert.equal(statuses.filter((s) => s === 202).length, 1, `statuses: ${statuses}`);
      assert.equal(statuses.filter((s) => s === 409).length, 23, `statuses: ${statuses}`);
      const ids = new Set(answers.map((a) => a.body.job_id));
      assert.equal(ids.size, 1);
      const rows = await withClient({ user: 'postgres', database: DB }, (c) =>
        c.query('SELECT job_id::text FROM apollo_jobs.jobs WHERE thermos_job_id = $1', [thermos]));
      assert.deepEqual(rows.rows.map((r) => r.job_id), [...ids]);
      const retried = retries[bucket].slice(before);
      assert.ok(retried.every((code) => code === '40001'));
      if (bucket === 'rc') assert.equal(retried.length, 0, 'READ COMMITTED never needs a retry');
      t.diagnostic(`${label}: ${retried.length} request(s) retried after 40001`);
    });
  }

  // A registration that commits while ours waits on it: READ COMMITTED
  // re-reads inside the extension; REPEATABLE READ gets 40001 and retries.
  async function raceAgainstUncommitted(base, user, thermos) {
    const holder = new Client({ user: 'postgres', database: DB });
    // a separate session: pg_stat_activity is read once per transaction
    const watcher = new Client({ user: 'postgres', database: DB });
    await holder.connect();
    await watcher.connect();
    try {
      await holder.query('BEGIN');
      const held = (await holder.query(UPSERT_JOB, [thermos, 'org', 'org_acme', null, 'batch_revoke'])).rows[0];
      const pending = post(base, orgJob(thermos));
      await waitFor(async () => {
        const r = await watcher.query(
          "SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'", [user]);
        return r.rows[0].n > 0;
      });
      await holder.query('COMMIT');
      return { held, answer: await pending };
    } finally {
      await holder.end();
      await watcher.end();
    }
  }

  it('READ COMMITTED: losing to a concurrent registration is a 409 without any retry', async () => {
    const before = retries.rc.length;
    const { held, answer } = await raceAgainstUncommitted(api, 'apollo_api', 'wf-race-rc');
    assert.equal(answer.status, 409);
    assert.equal(answer.body.job_id, held.job_id);
    assert.equal(retries.rc.length, before);
  });

  it('REPEATABLE READ: 40001, retried, then 409 with the winner\'s id', async () => {
    const before = retries.rr.length;
    const { held, answer } = await raceAgainstUncommitted(apiRR, 'apollo_api_rr', 'wf-race-rr');
    assert.equal(answer.status, 409);
    assert.equal(answer.body.job_id, held.job_id);
    assert.deepEqual(retries.rr.slice(before), ['40001']);
  });

  it('REPEATABLE READ with no retries left: 503 with Retry-After', async () => {
    const { answer } = await raceAgainstUncommitted(apiRR1, 'apollo_api_rr', 'wf-race-rr1');
    assert.equal(answer.status, 503);
    assert.equal(answer.headers.get('retry-after'), '1');
    assert.deepEqual(answer.body, { error: 'unavailable' });
    assert.deepEqual(retries.rr1, []);
  });
});

describe('errors over HTTP', () => {
  const cases = [
    ['22004 thermos_job_id null', orgJob(null), /"thermos_job_id" must not be null/],
    ['22004 job_type missing', { thermos_job_id: 'wf-e1', job_class: 'org', org_id: 'org_acme' }, /"job_type" must not be null/],
    ['22023 empty org_id', orgJob('wf-e2', { org_id: '' }), /"org_id" must not be empty/],
    ['22023 overlong thermos_job_id', orgJob('x'.repeat(1001)), /"thermos_job_id" is too long/],
    ['22023 unknown job_class', orgJob('wf-e3', { job_class: 'team' }), /invalid job_class/],
    ['22023 project_id on an org job', orgJob('wf-e4', { project_id: 'prj_acme_web' }), /project_id must be null for an org job/],
    ['22023 project job without project_id', projectJob('wf-e5', { project_id: null }), /project_id is required/],
    ['22023 bad job_type', orgJob('wf-e6', { job_type: 'Batch-Revoke' }), /invalid job_type/],
  ];
  for (const [label, body, message] of cases) {
    it(`${label}: 400 with the extension's message`, async () => {
      const r = await post(api, body);
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_argument');
      assert.match(r.body.message, message);
    });
  }

  it('a body that is not JSON text fields: 400 before any SQL', async () => {
    assert.equal((await post(api, [1, 2])).status, 400);
    assert.equal((await post(api, orgJob(42))).status, 400);
  });

  it('23503 unknown org or project: 404 without the key', async () => {
    for (const body of [orgJob('wf-e7', { org_id: 'org_nope' }), projectJob('wf-e8', { project_id: 'prj_nope' })]) {
      const r = await post(api, body);
      assert.equal(r.status, 404);
      assert.deepEqual(r.body, { error: 'not_found', message: 'org or project not found' });
    }
  });

  it('23505 workflow registered by another tenant: 409 with no details', async () => {
    const mine = await post(api, projectJob('wf-taken'));
    assert.equal(mine.status, 202);
    const theirs = await post(api, projectJob('wf-taken', { org_id: 'org_umbrella', project_id: 'prj_umbrella_lab' }));
    assert.equal(theirs.status, 409);
    assert.deepEqual(theirs.body, { error: 'conflict' });
    const text = JSON.stringify(theirs.body) + JSON.stringify([...theirs.headers]);
    assert.ok(!text.includes(mine.body.job_id) && !text.includes('org_acme') && !text.includes('prj_acme_web'));
  });

  it('55000 jobs table not created: 503 for create and poll', async () => {
    const c = await post(apiNoTable, orgJob('wf-e9'));
    assert.equal(c.status, 503);
    assert.equal(c.headers.get('retry-after'), '1');
    assert.equal((await get(apiNoTable, 'oj_000000000000000000000', 'org_acme')).status, 503);
  });

  it('42501 role without the grants: 500 with no details', async () => {
    const c = await post(apiNoGrants, orgJob('wf-e10'));
    assert.equal(c.status, 500);
    assert.deepEqual(c.body, { error: 'internal' });
    assert.equal((await get(apiNoGrants, 'oj_000000000000000000000', 'org_acme')).status, 500);
  });

  it('22004 poll without org_id: 400', async () => {
    assert.equal((await get(api, 'oj_000000000000000000000')).status, 400);
  });
});

describe('every documented SQLSTATE, raised for real, maps to its status', () => {
  // [sqlstate, role, database, statement, params]
  const raise = {
    '22004': ['apollo_api', DB, UPSERT_JOB, [null, 'org', 'org_acme', null, 'batch_revoke']],
    '22023': ['apollo_api', DB, UPSERT_JOB, ['wf-m1', 'org', '', null, 'batch_revoke']],
    '22P02': ['apollo_api', DB, 'SELECT apollo_jobs.job_class_of($1)', ['not-an-id']],
    '23514': ['apollo_api', DB, 'SELECT $1::apollo_jobs.job_id', ['not-an-id']],
    '23503': ['apollo_api', DB, UPSERT_JOB, ['wf-m2', 'org', 'org_nope', null, 'batch_revoke']],
    '23505': ['apollo_api', DB, UPSERT_JOB, ['wf-org-1', 'org', 'org_umbrella', null, 'batch_revoke']],
    '55000': ['apollo_api', DB_NO_TABLE, JOB_BY_ID, ['oj_000000000000000000000', 'org_acme', null]],
    '42501': ['apollo_nobody', DB, UPSERT_JOB, ['wf-m3', 'org', 'org_acme', null, 'batch_revoke']],
  };
  const expected = { '22004': 400, '22023': 400, '22P02': 400, '23514': 400, '23503': 404, '23505': 409, '55000': 503, '42501': 500, '40001': 503 };

  for (const [sqlstate, [user, database, text, params]] of Object.entries(raise)) {
    it(`${sqlstate} -> ${expected[sqlstate]}`, async () => {
      const err = await withClient({ user, database }, (c) => c.query(text, params).then(() => null, (e) => e));
      assert.ok(err, 'the statement should fail');
      assert.equal(err.code, sqlstate, err.message);
      assert.equal(errorResponse(err).status, expected[sqlstate]);
    });
  }

  it('40001 -> 503 (the snapshot predates a committed registration of the same workflow)', async () => {
    const err = await withClient({ user: 'apollo_api', database: DB }, async (late) => {
      await late.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await late.query('SELECT 1'); // takes the snapshot
      await withClient({ user: 'apollo_api', database: DB }, (early) =>
        early.query(UPSERT_JOB, ['wf-m4', 'org', 'org_acme', null, 'batch_revoke']));
      const e = await late.query(UPSERT_JOB, ['wf-m4', 'org', 'org_acme', null, 'batch_revoke']).then(() => null, (x) => x);
      await late.query('ROLLBACK');
      return e;
    });
    assert.ok(err, 'the late registration should fail');
    assert.equal(err.code, '40001', err.message);
    assert.equal(errorResponse(err).status, 503);
  });

  it('the table covers exactly the documented SQLSTATEs (plus 22021)', () => {
    assert.deepEqual(Object.keys(STATUS_BY_SQLSTATE).sort(), [...Object.keys(expected), '22021'].sort());
    for (const [code, status] of Object.entries(expected)) assert.equal(STATUS_BY_SQLSTATE[code], status, code);
  });

  it('an error without a SQLSTATE (database unreachable) is a 503', () => {
    const e = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    assert.equal(errorResponse(e).status, 503);
  });
});
