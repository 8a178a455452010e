'use strict';
// The example API (jobs_api.js) with a hot standby: a pg_basebackup -R
// replica of the scratch cluster, streaming from it (PGREPLICA_HOST and
// PGREPLICA_PORT, set by tests/clients/run.sh). Reads go to the replica and
// registrations to the primary; the replica's lag is made visible by pausing
// its WAL replay, which is how the tests prove which server answered.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { createPools, createServer } = require('./jobs_api');
const { freshDatabase, withClient, waitFor, call, post } = require('./db');

const DB = 'node_replica';
const REPLICA = { host: process.env.PGREPLICA_HOST, port: Number(process.env.PGREPLICA_PORT) };

const onReplica = (fn, database = DB) => withClient({ ...REPLICA, user: 'postgres', database }, fn);
const onPrimary = (fn) => withClient({ user: 'postgres', database: DB }, fn);

/** Waits until the replica has replayed everything the primary has written so far. */
async function replayed() {
  const { rows } = await onPrimary((c) => c.query('SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn'));
  // in "postgres": DB itself may not have arrived yet
  await onReplica((c) => waitFor(async () => (await c.query(
    'SELECT coalesce(pg_catalog.pg_last_wal_replay_lsn() >= $1::pg_lsn, false) AS done', [rows[0].lsn])).rows[0].done, 30000),
  'postgres');
}

/** Runs fn with the replica's WAL replay paused: it answers from the state it had. */
async function whileReplayPaused(fn) {
  await onReplica(async (c) => {
    await c.query('SELECT pg_catalog.pg_wal_replay_pause()');
    await waitFor(async () => (await c.query('SELECT pg_catalog.pg_get_wal_replay_pause_state() AS s')).rows[0].s === 'paused');
  });
  try {
    return await fn();
  } finally {
    await onReplica((c) => c.query('SELECT pg_catalog.pg_wal_replay_resume()'));
  }
}

const servers = [];
const poolsToEnd = [];
const answered = [];
async function startApi(pools) {
  poolsToEnd.push(pools);
  const server = createServer(pools, { log: (r) => answered.push(r.sqlstate ?? null) });
  servers.push(server);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${server.address().port}`;
}

const poll = (base, jobId, orgId, projectId) =>
  call(base, 'GET', `/v1/jobs/${jobId}?${new URLSearchParams({ org_id: orgId, ...(projectId ? { project_id: projectId } : {}) })}`);
const listIds = async (base, params) => {
  const r = await call(base, 'GET', `/v1/jobs?${new URLSearchParams({ ...params, limit: '1000' })}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.data.map((j) => j.job_id);
};
const projectJob = (thermos) => ({
  thermos_job_id: thermos, job_class: 'project', org_id: 'org_acme', project_id: 'prj_acme_web', job_type: 'batch_revoke',
});

let pools; // primary + replica
let api;

before(async () => {
  assert.ok(REPLICA.host && REPLICA.port, 'PGREPLICA_HOST and PGREPLICA_PORT name the hot standby');
  await freshDatabase(DB);
  await replayed();
  pools = createPools({
    primary: { user: 'apollo_api', database: DB, max: 4 },
    replica: { ...REPLICA, user: 'apollo_api', database: DB, max: 4 },
  });
  api = await startApi(pools);
});

after(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await Promise.all(poolsToEnd.map((p) => p.end()));
});

describe('reads on a hot standby, writes on the primary', () => {
  it('the reads\' pool is connected to the standby, the writes\' to the primary', async () => {
    const recovery = async (pool) => (await pool.query('SELECT pg_catalog.pg_is_in_recovery() AS r')).rows[0].r;
    assert.equal(await recovery(pools.replica), true);
    assert.equal(await recovery(pools.primary), false);
  });

  it('getter and listing are answered by the replica: they still see a job whose project the primary has soft-deleted', async () => {
    const created = await post(api, projectJob('wf-replica-1'));
    assert.equal(created.status, 202);
    const id = created.body.job_id;
    await replayed();
    try {
      await whileReplayPaused(async () => {
        await onPrimary((c) => c.query("UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_acme_web'"));
        // the primary hides the job now ...
        const onPrimaryNow = await withClient({ user: 'apollo_api', database: DB }, (c) =>
          c.query('SELECT job_id FROM apollo_jobs.job_by_id($1, $2, $3)', [id, 'org_acme', 'prj_acme_web']));
        assert.equal(onPrimaryNow.rows.length, 0);
        // ... the service, reading on the replica that has not replayed the soft-delete, still shows it
        assert.equal((await poll(api, id, 'org_acme', 'prj_acme_web')).status, 200);
        assert.ok((await listIds(api, { org_id: 'org_acme', project_id: 'prj_acme_web' })).includes(id));
      });
      await replayed();
      assert.equal((await poll(api, id, 'org_acme', 'prj_acme_web')).status, 404);
      assert.deepEqual(await listIds(api, { org_id: 'org_acme', project_id: 'prj_acme_web' }), []);
    } finally {
      await onPrimary((c) => c.query("UPDATE public.projects SET deleted = false WHERE nano_id = 'prj_acme_web'"));
      await replayed();
    }
  });

  it('read after write on a lagging replica: the getter asks the primary after the replica\'s 404; the listing shows the job once replayed', async () => {
    let id;
    await whileReplayPaused(async () => {
      const created = await post(api, projectJob('wf-replica-lag'));
      assert.equal(created.status, 202);
      id = created.body.job_id;
      const onReplicaNow = await onReplica((c) =>
        c.query('SELECT count(*)::int AS n FROM apollo_jobs.jobs WHERE job_id = $1', [id]));
      assert.equal(onReplicaNow.rows[0].n, 0, 'the replica has not replayed the registration');
      const polled = await poll(api, id, 'org_acme', 'prj_acme_web');
      assert.equal(polled.status, 200);
      assert.equal(polled.body.thermos_job_id, 'wf-replica-lag');
      assert.ok(!(await listIds(api, { org_id: 'org_acme', project_id: 'prj_acme_web' })).includes(id));
      // an echo is answered by the primary, which has it
      assert.deepEqual((await post(api, projectJob('wf-replica-lag'))).body, { job_id: id, created: false });
    });
    await replayed();
    assert.ok((await listIds(api, { org_id: 'org_acme', project_id: 'prj_acme_web' })).includes(id));
  });

  it('an unknown job is a 404 from both servers', async () => {
    assert.equal((await poll(api, 'pj_000000000000000000000', 'org_acme', 'prj_acme_web')).status, 404);
  });
});

describe('a write that meets a standby (25006)', () => {
  it('503 with Retry-After, and the primary pool is replaced so the next attempt connects anew', async () => {
    const known = await post(api, projectJob('wf-misrouted-known'));
    assert.equal(known.status, 202);
    await replayed();
    // the "primary" address names the standby: a service whose pool was
    // filled before a failover (or a misrouted configuration)
    const primary = { ...REPLICA, user: 'apollo_api', database: DB, max: 1 };
    const misrouted = createPools({ primary });
    const base = await startApi(misrouted);
    // a known workflow's echo needs no write: the standby answers it, and
    // the pool keeps that connection
    assert.deepEqual((await post(base, projectJob('wf-misrouted-known'))).body, { job_id: known.body.job_id, created: false });
    assert.equal(misrouted.primary.idleCount, 1);

    // the failover moves the address to the new primary (a DNS name or a
    // virtual IP); the pooled connection still reaches the standby
    primary.host = process.env.PGHOST;
    primary.port = Number(process.env.PGPORT);
    const before = answered.length;
    const r = await post(base, projectJob('wf-misrouted-new'));
    assert.equal(r.status, 503);
    assert.equal(r.headers.get('retry-after'), '1');
    assert.deepEqual(r.body, { error: 'unavailable' });
    assert.deepEqual(answered.slice(before), ['25006']);
    assert.equal(misrouted.primaryPools, 2);

    // the client's retry: the new pool connects anew, to the primary
    const again = await post(base, projectJob('wf-misrouted-new'));
    assert.equal(again.status, 202);
    const rows = await onPrimary((c) =>
      c.query("SELECT job_id::text FROM apollo_jobs.jobs WHERE thermos_job_id = 'wf-misrouted-new'"));
    assert.deepEqual(rows.rows.map((x) => x.job_id), [again.body.job_id]);
    assert.equal(misrouted.primaryPools, 2);
  });
});
