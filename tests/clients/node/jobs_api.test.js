'use strict';
// The example API (jobs_api.js) over HTTP on 127.0.0.1, against the scratch
// cluster: create/poll/list, dedup under concurrency, and the SQLSTATE -> HTTP
// mapping with real errors from the extension and from the server (read-only
// transactions, lock and statement timeouts, terminated sessions, deadlocks).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Client } = require('pg');
const {
  createServer, createPool, errorResponse, queryWithRetry, createJob, statusOf,
  STATUS_BY_SQLSTATE, STATUS_BY_SQLSTATE_CLASS, RETRY_SQLSTATES,
} = require('./jobs_api');
const { UPSERT_JOB, JOB_BY_ID, LIST_JOBS } = require('./sql');
const { freshDatabase, withClient, waitFor, call, post } = require('./db');

// tests/poolers/run.sh runs this suite with the service's connections behind
// pgbouncer in transaction pooling: SERVICE_PGHOST/SERVICE_PGPORT point the
// service roles' connections (apollo_api, apollo_api_rr, apollo_nobody) at
// it, while the postgres role's (fixtures, locks, pg_stat_activity) go
// straight to the server in PGHOST/PGPORT. SERVICE_POOL_MODE=transaction
// skips the tests that need a server session of their own (each says why).
const SERVICE = process.env.SERVICE_PGPORT
  ? { host: process.env.SERVICE_PGHOST ?? '127.0.0.1', port: Number(process.env.SERVICE_PGPORT) }
  : {};
const sessionBound = (why) =>
  (process.env.SERVICE_POOL_MODE === 'transaction' ? { skip: `needs its own server session: ${why}` } : {});

const DB = 'node_api';
const DB_NO_TABLE = 'node_api_no_table';
const DB_BROKEN = 'node_api_broken_binding';
const JOB_ID = /^(oj|pj)_[0-9A-Za-z]{21}$/;

const pools = [];
const servers = [];
const retries = { rc: [], rr: [], rr1: [] };
const poolErrors = {}; // application_name -> errors the pool's 'error' listener saw
const answered = {}; // application_name -> [{ status, sqlstate }] as the server logged them

/**
 * Starts the API over a pool (jobs_api.createPool, with its 'error' listener)
 * for `user`; returns its base URL. `config` adds node-postgres connection
 * settings (e.g. options: '-c lock_timeout=200'); every API gets its own
 * application_name, so a test can find its sessions in pg_stat_activity.
 */
let apiCount = 0;
async function startApi(user, database, options = {}, max = 10, config = {}) {
  const name = config.application_name ?? `node_api_${++apiCount}`;
  poolErrors[name] = [];
  answered[name] = [];
  const db = createPool({ user, database, max, application_name: name, ...SERVICE, ...config }, {
    onError: (err) => poolErrors[name].push(err),
  });
  pools.push(db);
  const server = createServer(db, {
    ...options,
    log: (r) => answered[name].push({ status: r.status, sqlstate: r.sqlstate ?? null }),
  });
  servers.push(server);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${server.address().port}`;
}


const get = (base, jobId, orgId, projectId) => {
  const q = new URLSearchParams();
  if (orgId !== undefined) q.set('org_id', orgId);
  if (projectId !== undefined) q.set('project_id', projectId);
  return call(base, 'GET', `/v1/jobs/${encodeURIComponent(jobId)}?${q}`);
};
/** GET /v1/jobs with these query parameters (undefined ones left out). */
const list = (base, params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
  return call(base, 'GET', `/v1/jobs?${q}`);
};

const orgJob = (thermos, overrides = {}) => ({
  thermos_job_id: thermos, job_class: 'org', org_id: 'org_acme', project_id: null, job_type: 'batch_revoke', ...overrides,
});
const projectJob = (thermos, overrides = {}) => ({
  thermos_job_id: thermos, job_class: 'project', org_id: 'org_acme', project_id: 'prj_acme_web', job_type: 'batch_revoke', ...overrides,
});

const asPostgres = (fn, database = DB) => withClient({ user: 'postgres', database }, fn);

const API_NAME = 'node_api_rc';
let api; // apollo_api, READ COMMITTED
let apiRR; // apollo_api_rr, REPEATABLE READ, up to 5 attempts
let apiRR1; // apollo_api_rr, one attempt only
let apiNoTable; // database without apollo_jobs.jobs
let apiNoGrants; // apollo_nobody
let apiBroken; // database whose project binding names a dropped column

before(async () => {
  await freshDatabase(DB);
  await freshDatabase(DB_NO_TABLE, { jobsTable: false });
  await freshDatabase(DB_BROKEN);
  await asPostgres((c) => c.query('ALTER TABLE public.projects DROP COLUMN deleted'), DB_BROKEN);
  api = await startApi('apollo_api', DB, { onRetry: (n, e) => retries.rc.push(e.code) }, 12, { application_name: API_NAME });
  apiRR = await startApi('apollo_api_rr', DB, { maxAttempts: 5, onRetry: (n, e) => retries.rr.push(e.code) }, 12);
  apiRR1 = await startApi('apollo_api_rr', DB, { maxAttempts: 1, onRetry: (n, e) => retries.rr1.push(e.code) }, 2);
  apiNoTable = await startApi('apollo_api', DB_NO_TABLE, {}, 2, { application_name: 'node_api_no_table' });
  apiNoGrants = await startApi('apollo_nobody', DB, {}, 2);
  apiBroken = await startApi('apollo_api', DB_BROKEN, {}, 2, { application_name: 'node_api_broken' });
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

  it('55000 jobs table not created: 500 without Retry-After for create and poll (an operator must create it)', async () => {
    const c = await post(apiNoTable, orgJob('wf-e9'));
    assert.deepEqual([c.status, c.body, c.headers.get('retry-after')], [500, { error: 'internal' }, null]);
    assert.equal((await get(apiNoTable, 'oj_000000000000000000000', 'org_acme')).status, 500);
    assert.deepEqual(answered.node_api_no_table.map((r) => r.sqlstate), ['55000', '55000']);
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

describe('listing: GET /v1/jobs', () => {
  // A tenant of its own, so the other tests' jobs do not matter: org_list with
  // projects prj_list_a, prj_list_b (soft-deleted by a test below) and
  // prj_list_c; org_list_other with prj_other.
  const ORG = 'org_list';
  const registered = { org: [], prj_list_a: [], prj_list_b: [], prj_list_c: [] };

  /** The listing's expected ids, straight from the table in the documented order. */
  async function expectedIds(where, params = []) {
    const { rows } = await asPostgres((c) => c.query(
      `SELECT job_id FROM apollo_jobs.jobs WHERE ${where} ORDER BY created_at DESC, job_id DESC`, params));
    return rows.map((r) => r.job_id);
  }

  /** Follows next_cursor from the first page to the last: every page's answer. */
  async function pageThrough(base, params) {
    const pages = [];
    let cursor;
    for (;;) {
      const r = await list(base, { ...params, starting_after: cursor });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      pages.push(r.body);
      if (!r.body.has_more) return pages;
      assert.equal(r.body.next_cursor, r.body.data[r.body.data.length - 1].job_id);
      cursor = r.body.next_cursor;
      assert.ok(pages.length < 100, 'paging does not end');
    }
  }

  before(async () => {
    await asPostgres(async (c) => {
      await c.query("INSERT INTO public.orgs (nano_id) VALUES ('org_list'), ('org_list_other')");
      await c.query(`INSERT INTO public.projects (nano_id, org_id) VALUES ('prj_list_a', 'org_list'),
                     ('prj_list_b', 'org_list'), ('prj_list_c', 'org_list'), ('prj_other', 'org_list_other')`);
    });
    // through the API, one by one: distinct created_at
    for (let i = 0; i < 4; i++) {
      const r = await post(api, orgJob(`wf-list-org-${i}`, { org_id: ORG, job_type: i % 2 ? 'key_rotation' : 'batch_revoke' }));
      assert.equal(r.status, 202);
      registered.org.push(r.body.job_id);
    }
    // in one transaction: one created_at for all, so job_id DESC orders them
    await withClient({ ...SERVICE, user: 'apollo_api', database: DB }, async (c) => {
      await c.query('BEGIN');
      for (let i = 4; i < 10; i++) {
        const { rows } = await c.query(UPSERT_JOB, [`wf-list-org-${i}`, 'org', ORG, null, i % 2 ? 'key_rotation' : 'batch_revoke']);
        registered.org.push(rows[0].job_id);
      }
      for (const [prj, n] of [['prj_list_a', 5], ['prj_list_b', 2], ['prj_list_c', 1]]) {
        for (let i = 0; i < n; i++) {
          const { rows } = await c.query(UPSERT_JOB, [`wf-list-${prj}-${i}`, 'project', ORG, prj, 'batch_revoke']);
          registered[prj].push(rows[0].job_id);
        }
      }
      await c.query('COMMIT');
    });
    await withClient({ ...SERVICE, user: 'apollo_api', database: DB }, (c) =>
      c.query(UPSERT_JOB, ['wf-list-other', 'project', 'org_list_other', 'prj_other', 'batch_revoke']));
  });

  it('pages through an org\'s jobs (4 pages of 3): every job exactly once, newest first, ties by job_id', async () => {
    const want = await expectedIds("org_id = 'org_list' AND project_id IS NULL");
    assert.deepEqual([...want].sort(), [...registered.org].sort());
    const pages = await pageThrough(api, { org_id: ORG, limit: '3' });
    assert.deepEqual(pages.map((p) => p.data.length), [3, 3, 3, 1]);
    assert.deepEqual(pages.map((p) => p.has_more), [true, true, true, false]);
    assert.equal(pages[3].next_cursor, null);
    assert.deepEqual(pages.flatMap((p) => p.data.map((j) => j.job_id)), want);
    const first = pages[0].data[0];
    assert.deepEqual(Object.keys(first).sort(),
      ['created_at', 'job_class', 'job_id', 'job_type', 'org_id', 'project_id', 'thermos_job_id']);
    assert.equal(first.job_class, 'org');
    assert.equal(first.project_id, null);
    assert.ok(!Number.isNaN(Date.parse(first.created_at)));
    // the six registered in one transaction share created_at
    const stamps = pages.flatMap((p) => p.data.map((j) => j.created_at));
    assert.ok(new Set(stamps).size < stamps.length, 'some jobs share created_at');
  });

  it('a full last page says has_more; the page after it is empty (the documented price of the full-page rule)', async () => {
    const pages = await pageThrough(api, { org_id: ORG, limit: '5' });
    assert.deepEqual(pages.map((p) => [p.data.length, p.has_more]), [[5, true], [5, true], [0, false]]);
    assert.deepEqual(pages[2], { data: [], has_more: false, next_cursor: null });
  });

  it('defaults: include_project_jobs false, limit 50', async () => {
    const r = await list(api, { org_id: ORG });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.data.map((j) => j.job_id), await expectedIds("org_id = 'org_list' AND project_id IS NULL"));
    assert.equal(r.body.has_more, false);
    assert.equal(r.body.next_cursor, null);
  });

  it('include_project_jobs=true pages through the org\'s and all its projects\' jobs', async () => {
    const want = await expectedIds("org_id = 'org_list'");
    assert.equal(want.length, 18);
    const pages = await pageThrough(api, { org_id: ORG, include_project_jobs: 'true', limit: '4' });
    assert.deepEqual(pages.flatMap((p) => p.data.map((j) => j.job_id)), want);
    assert.ok(pages.length >= 5);
  });

  it('project_id pages through that project only', async () => {
    const want = await expectedIds("project_id = 'prj_list_a'");
    assert.deepEqual([...want].sort(), [...registered.prj_list_a].sort());
    const pages = await pageThrough(api, { org_id: ORG, project_id: 'prj_list_a', limit: '2' });
    assert.deepEqual(pages.map((p) => p.data.length), [2, 2, 1]);
    assert.deepEqual(pages.flatMap((p) => p.data.map((j) => j.job_id)), want);
    assert.ok(pages.every((p) => p.data.every((j) => j.project_id === 'prj_list_a' && j.job_class === 'project')));
  });

  it('job_type filters, and pages with the same cursors', async () => {
    const want = await expectedIds("org_id = 'org_list' AND project_id IS NULL AND job_type = 'key_rotation'");
    assert.equal(want.length, 5);
    const pages = await pageThrough(api, { org_id: ORG, job_type: 'key_rotation', limit: '2' });
    assert.deepEqual(pages.flatMap((p) => p.data.map((j) => j.job_id)), want);
    assert.equal((await list(api, { org_id: ORG, job_type: 'no_such_type' })).body.data.length, 0);
  });

  it('a bad, foreign or unknown cursor is a 400 with one and the same message', async () => {
    const [otherOrgJob] = await expectedIds("org_id = 'org_list_other'");
    const cursors = [
      'garbage', '', 'oj_000000000000000000000', otherOrgJob,
      registered.prj_list_a[0], // a job of the org, but not of this listing (org jobs only)
    ];
    const messages = new Set();
    for (const cursor of cursors) {
      const r = await list(api, { org_id: ORG, starting_after: cursor, limit: '3' });
      assert.equal(r.status, 400, `cursor ${cursor}`);
      assert.equal(r.body.error, 'invalid_argument');
      messages.add(r.body.message);
    }
    assert.equal(messages.size, 1, [...messages].join(' | '));
    assert.match([...messages][0], /cursor/);
  });

  it('limit out of range or not an integer is a 400', async () => {
    for (const [limit, sqlstate] of [['0', '22023'], ['1001', '22023'], ['-1', '22023'], ['abc', '22P02'], ['2.5', '22P02'], ['', '22P02'], ['99999999999', '22003']]) {
      const before = answered[API_NAME].length;
      const r = await list(api, { org_id: ORG, limit });
      assert.equal(r.status, 400, `limit ${limit}`);
      assert.equal(r.body.error, 'invalid_argument');
      assert.equal(answered[API_NAME][before].sqlstate, sqlstate, `limit ${limit}`);
    }
    for (const limit of ['1', '1000']) assert.equal((await list(api, { org_id: ORG, limit })).status, 200, `limit ${limit}`);
  });

  it('other bad parameters are 400s', async () => {
    assert.equal((await list(api, { limit: '3' })).status, 400); // no org_id: 22004
    assert.equal((await list(api, { org_id: ORG, project_id: 'prj_list_a', include_project_jobs: 'true' })).status, 400);
    assert.equal((await list(api, { org_id: ORG, include_project_jobs: 'maybe' })).status, 400);
    assert.equal((await list(api, { org_id: ORG, job_type: 'Bad-Type' })).status, 400);
    const typo = await list(api, { org_id: ORG, starting_afer: registered.org[0] });
    assert.deepEqual([typo.status, typo.body.message], [400, 'unknown query parameter: starting_afer']);
    const twice = await call(api, 'GET', '/v1/jobs?org_id=org_list&org_id=org_acme');
    assert.equal(twice.status, 400);
  });

  it('another org\'s project lists nothing', async () => {
    for (const [org, prj] of [['org_acme', 'prj_list_a'], ['org_list', 'prj_other'], ['org_list_other', 'prj_list_a']]) {
      const r = await list(api, { org_id: org, project_id: prj });
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, { data: [], has_more: false, next_cursor: null }, `${org}/${prj}`);
    }
  });

  it('a soft-deleted project lists nothing, and its jobs leave the org-wide listing', async () => {
    assert.equal((await list(api, { org_id: ORG, project_id: 'prj_list_b' })).body.data.length, 2);
    await asPostgres((c) => c.query("UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_list_b'"));
    const r = await list(api, { org_id: ORG, project_id: 'prj_list_b' });
    assert.deepEqual([r.status, r.body], [200, { data: [], has_more: false, next_cursor: null }]);
    const all = await pageThrough(api, { org_id: ORG, include_project_jobs: 'true', limit: '1000' });
    const ids = all.flatMap((p) => p.data.map((j) => j.job_id));
    assert.deepEqual(ids, await expectedIds("org_id = 'org_list' AND project_id IS DISTINCT FROM 'prj_list_b'"));
    assert.ok(registered.prj_list_b.every((id) => !ids.includes(id)));
    // and one of its jobs is no longer a cursor
    assert.equal((await list(api, { org_id: ORG, project_id: 'prj_list_b', starting_after: registered.prj_list_b[0] })).status, 400);
  });

  it('a soft-deleted org lists nothing', async () => {
    await asPostgres((c) => c.query("UPDATE public.orgs SET deleted = true WHERE nano_id = 'org_list_other'"));
    try {
      for (const params of [{ org_id: 'org_list_other' }, { org_id: 'org_list_other', project_id: 'prj_other' },
        { org_id: 'org_list_other', include_project_jobs: 'true' }]) {
        const r = await list(api, params);
        assert.deepEqual([r.status, r.body], [200, { data: [], has_more: false, next_cursor: null }], JSON.stringify(params));
      }
    } finally {
      await asPostgres((c) => c.query("UPDATE public.orgs SET deleted = false WHERE nano_id = 'org_list_other'"));
    }
  });

  it('55000 broken binding, missing table and 42501 missing grants: 500 without Retry-After', async () => {
    const broken = await list(apiBroken, { org_id: 'org_acme' });
    assert.deepEqual([broken.status, broken.body, broken.headers.get('retry-after')], [500, { error: 'internal' }, null]);
    assert.equal((await get(apiBroken, 'oj_000000000000000000000', 'org_acme')).status, 500);
    assert.deepEqual(answered.node_api_broken.map((r) => r.sqlstate), ['55000', '55000']);
    assert.equal((await list(apiNoTable, { org_id: 'org_acme' })).status, 500);
    assert.equal(answered.node_api_no_table.at(-1).sqlstate, '55000');
    const r = await list(apiNoGrants, { org_id: 'org_acme' });
    assert.deepEqual([r.status, r.body], [500, { error: 'internal' }]);
  });
});

describe('server states, provoked for real', () => {
  /** Runs fn while another session holds ACCESS EXCLUSIVE on apollo_jobs.jobs (what a DBA's ALTER TABLE takes). */
  async function whileTableLocked(fn) {
    const holder = new Client({ user: 'postgres', database: DB });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE apollo_jobs.jobs IN ACCESS EXCLUSIVE MODE');
      return await fn();
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
    }
  }

  const lastSqlstate = (name) => answered[name][answered[name].length - 1].sqlstate;

  it('25006 read-only transactions: a new registration is a 503; echo, poll and list still work',
    sessionBound('a startup option (-c default_transaction_read_only), which pgbouncer 1.18 refuses'), async () => {
    const known = await post(api, orgJob('wf-ro-known'));
    assert.equal(known.status, 202);
    const ro = await startApi('apollo_api', DB, {}, 2,
      { application_name: 'node_api_ro', options: '-c default_transaction_read_only=on' });
    const fresh = await post(ro, orgJob('wf-ro-new'));
    assert.equal(fresh.status, 503);
    assert.equal(fresh.headers.get('retry-after'), '1');
    assert.deepEqual(fresh.body, { error: 'unavailable' });
    assert.equal(lastSqlstate('node_api_ro'), '25006');
    const echo = await post(ro, orgJob('wf-ro-known'));
    assert.deepEqual([echo.status, echo.body], [409, { job_id: known.body.job_id, created: false }]);
    assert.equal((await get(ro, known.body.job_id, 'org_acme')).status, 200);
    const listed = await list(ro, { org_id: 'org_acme', limit: '1000' });
    assert.equal(listed.status, 200);
    assert.ok(listed.body.data.some((j) => j.job_id === known.body.job_id));
    const rows = await asPostgres((c) => c.query("SELECT count(*)::int AS n FROM apollo_jobs.jobs WHERE thermos_job_id = 'wf-ro-new'"));
    assert.equal(rows.rows[0].n, 0);
  });

  it('55P03 lock_timeout behind an ACCESS EXCLUSIVE lock: 503 with Retry-After for create, poll and list; then 202',
    sessionBound('a startup option (-c lock_timeout)'), async () => {
    const base = await startApi('apollo_api', DB, {}, 2, { application_name: 'node_api_lock', options: '-c lock_timeout=200' });
    const known = await post(api, orgJob('wf-lock-known'));
    await whileTableLocked(async () => {
      for (const r of [await post(base, orgJob('wf-lock-1')), await get(base, known.body.job_id, 'org_acme'),
        await list(base, { org_id: 'org_acme' })]) {
        assert.equal(r.status, 503);
        assert.equal(r.headers.get('retry-after'), '1');
        assert.equal(lastSqlstate('node_api_lock'), '55P03');
      }
    });
    assert.equal((await post(base, orgJob('wf-lock-1'))).status, 202);
  });

  it('57014 statement_timeout behind the same lock: 503 with Retry-After; then 202',
    sessionBound('a startup option (-c statement_timeout)'), async () => {
    const base = await startApi('apollo_api', DB, {}, 2, { application_name: 'node_api_slow', options: '-c statement_timeout=200' });
    await whileTableLocked(async () => {
      for (const r of [await post(base, orgJob('wf-slow-1')), await list(base, { org_id: 'org_acme' })]) {
        assert.equal(r.status, 503);
        assert.equal(r.headers.get('retry-after'), '1');
        assert.equal(lastSqlstate('node_api_slow'), '57014');
      }
    });
    assert.equal((await post(base, orgJob('wf-slow-1'))).status, 202);
  });

  const terminate = (name) => asPostgres((c) => c.query(
    'SELECT pg_catalog.pg_terminate_backend(pid, 10000) AS gone FROM pg_catalog.pg_stat_activity WHERE application_name = $1', [name]));

  it('57P01 on an idle pooled connection: the pool\'s error listener logs it, the process lives on, the next request is served',
    sessionBound('pg_terminate_backend of the pool\'s own server session; behind pgbouncer the server session is pgbouncer\'s'), async () => {
    const base = await startApi('apollo_api', DB, {}, 2, { application_name: 'node_api_kill_idle' });
    const known = await post(base, orgJob('wf-kill-idle'));
    assert.equal(known.status, 202); // leaves one idle connection in the pool
    const { rows } = await terminate('node_api_kill_idle');
    assert.deepEqual(rows, [{ gone: true }]);
    await waitFor(async () => poolErrors.node_api_kill_idle.length > 0);
    assert.equal(poolErrors.node_api_kill_idle[0].code, '57P01');
    const again = await get(base, known.body.job_id, 'org_acme');
    assert.equal(again.status, 200);
    assert.equal((await post(base, orgJob('wf-kill-idle-2'))).status, 202);
  });

  it('57P01 during a request: 503 with Retry-After; the pool reconnects and the next request is served',
    sessionBound('pg_terminate_backend of the pool\'s own server session'), async () => {
    const name = 'node_api_kill_busy';
    const base = await startApi('apollo_api', DB, {}, 2, { application_name: name });
    let answer;
    await whileTableLocked(async () => {
      const pending = post(base, orgJob('wf-kill-busy'));
      await waitFor(async () => (await asPostgres((c) => c.query(
        "SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        [name]))).rows[0].n > 0);
      await terminate(name);
      answer = await pending;
    });
    assert.equal(answer.status, 503);
    assert.equal(answer.headers.get('retry-after'), '1');
    assert.equal(lastSqlstate(name), '57P01');
    const again = await post(base, orgJob('wf-kill-busy'));
    assert.equal(again.status, 202); // the terminated attempt wrote nothing
  });

  it('a database that cannot be reached: 503 with Retry-After', async () => {
    const base = await startApi('apollo_api', DB, {}, 1, { application_name: 'node_api_nowhere', host: '127.0.0.1', port: 1 });
    const r = await post(base, orgJob('wf-nowhere'));
    assert.equal(r.status, 503);
    assert.equal(r.headers.get('retry-after'), '1');
    assert.equal(lastSqlstate('node_api_nowhere'), null);
  });
});

describe('40P01 deadlocks: retried like 40001, then 503', () => {
  let deadlock; // a real 40P01 from the server

  before(async () => {
    // Two transactions registering two thermos ids in opposite orders.
    const a = new Client({ ...SERVICE, user: 'apollo_api', database: DB });
    const b = new Client({ ...SERVICE, user: 'apollo_api', database: DB });
    await a.connect();
    await b.connect();
    try {
      await a.query('BEGIN');
      await b.query('BEGIN');
      await a.query(UPSERT_JOB, ['wf-dl-1', 'org', 'org_acme', null, 'batch_revoke']);
      await b.query(UPSERT_JOB, ['wf-dl-2', 'org', 'org_acme', null, 'batch_revoke']);
      const outcomes = await Promise.all([
        a.query(UPSERT_JOB, ['wf-dl-2', 'org', 'org_acme', null, 'batch_revoke']).then(() => null, (e) => e),
        b.query(UPSERT_JOB, ['wf-dl-1', 'org', 'org_acme', null, 'batch_revoke']).then(() => null, (e) => e),
      ]).catch((e) => [e]);
      deadlock = outcomes.find((e) => e !== null);
    } finally {
      await a.query('ROLLBACK').catch(() => {});
      await b.query('ROLLBACK').catch(() => {});
      await a.end();
      await b.end();
    }
  });

  it('the server raised 40P01, which maps to 503', () => {
    assert.ok(deadlock, 'one of the two should have been chosen as the deadlock victim');
    assert.equal(deadlock.code, '40P01', deadlock.message);
    assert.equal(errorResponse(deadlock).status, 503);
    assert.ok(RETRY_SQLSTATES.includes('40P01'));
  });

  it('a deadlocked attempt is retried as a new statement and then succeeds', async () => {
    const real = pools[0];
    let failures = 1;
    const flaky = { query: (text, args) => (failures-- > 0 ? Promise.reject(deadlock) : real.query(text, args)) };
    const seen = [];
    const r = await createJob(flaky, orgJob('wf-dl-retried'), { onRetry: (n, e) => seen.push(e.code) });
    assert.equal(r.status, 202);
    assert.deepEqual(seen, ['40P01']);
  });

  it('when retries run out: 503 with Retry-After, after maxAttempts attempts', async () => {
    let attempts = 0;
    const always = { query: () => { attempts++; return Promise.reject(deadlock); } };
    const seen = [];
    const r = await createJob(always, orgJob('wf-dl-never'), { maxAttempts: 4, onRetry: (n, e) => seen.push([n, e.code]) });
    assert.deepEqual([r.status, r.headers, r.body], [503, { 'Retry-After': '1' }, { error: 'unavailable' }]);
    assert.equal(attempts, 4);
    assert.deepEqual(seen, [[1, '40P01'], [2, '40P01'], [3, '40P01']]);
  });

  it('other errors are not retried', async () => {
    let attempts = 0;
    const err = await withClient({ ...SERVICE, user: 'apollo_api', database: DB }, (c) =>
      c.query(UPSERT_JOB, [null, 'org', 'org_acme', null, 'batch_revoke']).then(() => null, (e) => e));
    const failing = { query: () => { attempts++; return Promise.reject(err); } };
    await assert.rejects(queryWithRetry(failing, UPSERT_JOB, [], { maxAttempts: 5 }), (e) => e.code === '22004');
    assert.equal(attempts, 1);
  });
});

describe('every documented SQLSTATE, raised for real, maps to its status', () => {
  // [sqlstate, role, database, statement, params]
  const raise = {
    '22003': ['apollo_api', DB, LIST_JOBS, ['org_acme', null, 'false', null, null, '99999999999']],
    '22004': ['apollo_api', DB, UPSERT_JOB, [null, 'org', 'org_acme', null, 'batch_revoke']],
    '22023': ['apollo_api', DB, UPSERT_JOB, ['wf-m1', 'org', '', null, 'batch_revoke']],
    '22P02': ['apollo_api', DB, 'SELECT apollo_jobs.job_class_of($1)', ['not-an-id']],
    '23514': ['apollo_api', DB, 'SELECT $1::apollo_jobs.job_id', ['not-an-id']],
    '23503': ['apollo_api', DB, UPSERT_JOB, ['wf-m2', 'org', 'org_nope', null, 'batch_revoke']],
    '23505': ['apollo_api', DB, UPSERT_JOB, ['wf-org-1', 'org', 'org_umbrella', null, 'batch_revoke']],
    '55000': ['apollo_api', DB_NO_TABLE, JOB_BY_ID, ['oj_000000000000000000000', 'org_acme', null]],
    '42501': ['apollo_nobody', DB, UPSERT_JOB, ['wf-m3', 'org', 'org_acme', null, 'batch_revoke']],
    '0A000': ['postgres', DB, 'UPDATE apollo_jobs.jobs SET job_type = job_type WHERE false', []],
  };
  const expected = {
    '22003': 400, '22004': 400, '22023': 400, '22P02': 400, '23514': 400, '23503': 404, '23505': 409,
    '40001': 503, '40P01': 503, '25006': 503, '55P03': 503, '57014': 503, '57P01': 503, '53300': 503,
    '55000': 500, '0A000': 500, '27000': 500, '42501': 500,
  };

  for (const [sqlstate, [user, database, text, params]] of Object.entries(raise)) {
    it(`${sqlstate} -> ${expected[sqlstate]}`, async () => {
      const err = await withClient({ ...(user === 'postgres' ? {} : SERVICE), user, database }, (c) => c.query(text, params).then(() => null, (e) => e));
      assert.ok(err, 'the statement should fail');
      assert.equal(err.code, sqlstate, err.message);
      assert.equal(errorResponse(err).status, expected[sqlstate]);
    });
  }

  it('40001 -> 503 (the snapshot predates a committed registration of the same workflow)', async () => {
    const err = await withClient({ ...SERVICE, user: 'apollo_api', database: DB }, async (late) => {
      await late.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await late.query('SELECT 1'); // takes the snapshot
      await withClient({ ...SERVICE, user: 'apollo_api', database: DB }, (early) =>
        early.query(UPSERT_JOB, ['wf-m4', 'org', 'org_acme', null, 'batch_revoke']));
      const e = await late.query(UPSERT_JOB, ['wf-m4', 'org', 'org_acme', null, 'batch_revoke']).then(() => null, (x) => x);
      await late.query('ROLLBACK');
      return e;
    });
    assert.ok(err, 'the late registration should fail');
    assert.equal(err.code, '40001', err.message);
    assert.equal(errorResponse(err).status, 503);
  });

  it('25006 -> 503 (a new registration in a READ ONLY transaction)', async () => {
    const err = await withClient({ ...SERVICE, user: 'apollo_api', database: DB }, async (c) => {
      await c.query('BEGIN READ ONLY');
      const e = await c.query(UPSERT_JOB, ['wf-m5', 'org', 'org_acme', null, 'batch_revoke']).then(() => null, (x) => x);
      await c.query('ROLLBACK');
      return e;
    });
    assert.ok(err);
    assert.equal(err.code, '25006', err.message);
    assert.equal(errorResponse(err).status, 503);
  });

  it('27000 -> 500 (a BEFORE INSERT trigger swallows the registration; rolled back)', async () => {
    const err = await asPostgres(async (c) => {
      await c.query('BEGIN');
      await c.query("CREATE FUNCTION public.swallow() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'");
      await c.query('CREATE TRIGGER swallow BEFORE INSERT ON apollo_jobs.jobs FOR EACH ROW EXECUTE FUNCTION public.swallow()');
      const e = await c.query(UPSERT_JOB, ['wf-m6', 'org', 'org_acme', null, 'batch_revoke']).then(() => null, (x) => x);
      await c.query('ROLLBACK');
      return e;
    });
    assert.ok(err);
    assert.equal(err.code, '27000', err.message);
    assert.equal(errorResponse(err).status, 500);
    assert.deepEqual(errorResponse(err).body, { error: 'internal' });
  });

  it('53300 a database at its CONNECTION LIMIT: 503 with Retry-After', async () => {
    await asPostgres(async (c) => {
      await c.query('DROP DATABASE IF EXISTS node_api_full WITH (FORCE)');
      await c.query('CREATE DATABASE node_api_full CONNECTION LIMIT 0');
    });
    const full = await startApi('apollo_api', 'node_api_full', {}, 1, { application_name: 'node_api_full' });
    const r = await post(full, orgJob('wf-full'));
    assert.deepEqual([r.status, r.headers.get('retry-after'), r.body], [503, '1', { error: 'unavailable' }]);
    // behind pgbouncer the server's refusal reaches the client as pgbouncer's own 08P01
    const want = process.env.SERVICE_POOL_MODE === 'transaction' ? '08P01' : '53300';
    assert.deepEqual(answered.node_api_full.map((a) => a.sqlstate), [want]);
  });

  it('the table covers exactly the documented SQLSTATEs (plus those no test can raise: 22021, 57P02, 57P03, 58000)', () => {
    assert.deepEqual(Object.keys(STATUS_BY_SQLSTATE).sort(), [...Object.keys(expected), '22021', '57P02', '57P03', '58000'].sort());
    for (const [code, status] of Object.entries(expected)) assert.equal(STATUS_BY_SQLSTATE[code], status, code);
    for (const code of ['22021']) assert.equal(STATUS_BY_SQLSTATE[code], 400, code);
    for (const code of ['57P02', '57P03']) assert.equal(STATUS_BY_SQLSTATE[code], 503, code);
    assert.equal(STATUS_BY_SQLSTATE['58000'], 500);
    assert.deepEqual({ ...STATUS_BY_SQLSTATE_CLASS }, { '08': 503 });
  });

  it('connection exceptions (class 08) are 503; anything unlisted is 500', () => {
    for (const code of ['08000', '08003', '08006', '08P01']) assert.equal(statusOf(code), 503, code);
    for (const code of ['XX000', '42P01', '42883', '42P07']) assert.equal(statusOf(code), 500, code);
  });

  it('an error without a SQLSTATE (database unreachable) is a 503', () => {
    const e = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    assert.equal(errorResponse(e).status, 503);
  });

  it("README's Errors table: its HTTP column is statusOf's answer, a 503 exactly where its retry column does not say no", () => {
    const readme = fs.readFileSync(path.join(__dirname, '../../../README.md'), 'utf8');
    const section = readme.split('\n## Errors\n')[1].split('\n## ')[0];
    const rows = section.split('\n').filter((l) => /^\| [0-9A-Z]{5} \|/.test(l)).map((l) => {
      const cells = l.split('|').map((c) => c.trim());
      return { code: cells[1], http: cells.at(-3), retry: cells.at(-2) };
    });
    assert.ok(rows.length >= 20, `${rows.length} rows`);
    const noStatus = [];
    for (const { code, http, retry } of rows) {
      const m = /^(\d{3})\b/.exec(http);
      if (!m) { noStatus.push(code); continue; }
      assert.equal(statusOf(code), Number(m[1]), `${code}: README says ${http}`);
      assert.equal(!/^no\b/.test(retry), statusOf(code) === 503, `${code}: HTTP ${http}, retry ${retry}`);
    }
    assert.deepEqual(noStatus, ['2BP01']); // DROP EXTENSION: no request of the service's meets it
    const retried = rows.filter((r) => /bounded retries/.test(r.http)).map((r) => r.code);
    assert.deepEqual(retried.sort(), [...RETRY_SQLSTATES].sort());
  });
});
