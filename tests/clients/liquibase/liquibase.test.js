'use strict';
// The apollo_jobs migration (changelog/0002-apollo-jobs.xml) through real
// Liquibase, the one the npm package liquibase@4.28.1 ships (with its
// PostgreSQL JDBC driver), over JDBC to 127.0.0.1:$PGPORT.
//
// update-to-tag (the host schema) -> snapshot -> update -> DATABASECHANGELOG,
// the objects, the functions -> rollback-count refused while rows exist, and
// nothing changed -> rollback-count with apollo_jobs.force_drop=true -> the
// database is the snapshot again -> update again -> rollback-count of an
// empty table needs no force -> the snapshot again; a DBA's view over the
// table stops the rollback (no CASCADE) instead of being dropped with it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync, execFileSync } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');
const { Client } = require('pg');

const DB = 'liquibase_migration';
const HERE = __dirname;
// The version being tested, from Cargo.toml (the extension's default_version).
const VERSION = /^version = "([^"]+)"/m.exec(fs.readFileSync(path.join(HERE, '..', '..', '..', 'Cargo.toml'), 'utf8'))[1];
const LIQUIBASE = path.join(HERE, '..', 'node_modules', 'liquibase', 'dist', 'liquibase', 'liquibase');
const PGBIN = process.env.PGBIN || '/usr/lib/postgresql/15/bin';
const PGPORT = process.env.PGPORT || '5432';

/** Runs the Liquibase CLI; returns { status, out } (stdout + stderr). */
function liquibase(...args) {
  const r = spawnSync(LIQUIBASE, [
    `--url=jdbc:postgresql://127.0.0.1:${PGPORT}/${DB}`,
    '--username=postgres',
    '--search-path=changelog',
    '--changelog-file=db.changelog-master.xml',
    '--show-banner=false',
    ...args,
  ], { cwd: HERE, encoding: 'utf8', timeout: 180000 });
  if (r.error) throw r.error;
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

function mustSucceed(...args) {
  const r = liquibase(...args);
  assert.equal(r.status, 0, `liquibase ${args.join(' ')} failed:\n${r.out}`);
  return r.out;
}

let db;
const q = async (text, params) => (await db.query(text, params)).rows;

/** Everything that should be back after a rollback: the schema (pg_dump -s), the changelog, the host rows. */
async function snapshot() {
  const ddl = execFileSync(path.join(PGBIN, 'pg_dump'), ['-s', '-U', 'postgres', '-d', DB], { encoding: 'utf8' })
    .split('\n')
    // \restrict keys are random per dump (PostgreSQL 15.14+)
    .filter((l) => !/^\\(un)?restrict /.test(l))
    .join('\n');
  return {
    ddl,
    changelog: await q('SELECT id, author, filename, dateexecuted, orderexecuted, exectype, md5sum, tag FROM public.databasechangelog ORDER BY orderexecuted'),
    orgs: await q('SELECT * FROM public.orgs ORDER BY nano_id'),
    projects: await q('SELECT * FROM public.projects ORDER BY nano_id'),
    extensions: await q('SELECT extname FROM pg_catalog.pg_extension ORDER BY extname'),
    schemas: await q("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' ORDER BY nspname"),
  };
}

async function assertAsBefore(before) {
  const now = await snapshot();
  assert.deepEqual(now.extensions, [{ extname: 'plpgsql' }], 'apollo_jobs is gone');
  assert.deepEqual(now.schemas, [{ nspname: 'public' }], 'no schema apollo_jobs left behind');
  assert.deepEqual(now.changelog, before.changelog);
  assert.deepEqual(now.orgs, before.orgs);
  assert.deepEqual(now.projects, before.projects);
  assert.equal(now.ddl, before.ddl);
}

async function changesetApplied() {
  return q("SELECT id, author, filename, exectype, description, comments FROM public.databasechangelog WHERE id = 'apollo-jobs-1'");
}

describe('Liquibase changelog for apollo_jobs', () => {
  let baseline; // the database just before apollo_jobs

  before(async () => {
    assert.ok(fs.existsSync(LIQUIBASE), `no Liquibase launcher at ${LIQUIBASE} (npm ci first)`);
    const admin = new Client({ user: 'postgres', database: 'postgres' });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${DB}`);
    await admin.end();
    db = new Client({ user: 'postgres', database: DB });
    await db.connect();
  });

  after(async () => {
    await db?.end();
  });

  it('the launcher is Liquibase 4.28 with the PostgreSQL JDBC driver', () => {
    const out = mustSucceed('--version');
    assert.match(out, /Liquibase Version: 4\.28\./);
    assert.match(out, /postgresql\.jar: PostgreSQL JDBC Driver 42\./);
  });

  it('update-to-tag before-apollo-jobs builds the host schema only', async () => {
    mustSucceed('update-to-tag', '--tag=before-apollo-jobs');
    await db.query("INSERT INTO public.orgs (nano_id) VALUES ('org_acme'), ('org_umbrella')");
    await db.query("INSERT INTO public.projects (nano_id, org_id) VALUES ('prj_acme_web', 'org_acme')");
    assert.deepEqual(await q("SELECT extname FROM pg_catalog.pg_extension WHERE extname = 'apollo_jobs'"), []);
    baseline = await snapshot();
  });

  it('update applies changeset apollo-jobs-1 and records it in DATABASECHANGELOG', async () => {
    mustSucceed('update');
    assert.deepEqual(await changesetApplied(), [{
      id: 'apollo-jobs-1',
      author: 'platform-dba',
      filename: '0002-apollo-jobs.xml',
      exectype: 'EXECUTED',
      description: 'sql; sql',
      comments: 'apollo_jobs: extension and jobs table over public.orgs / public.projects',
    }]);
    assert.deepEqual(await q('SELECT locked FROM public.databasechangeloglock'), [{ locked: false }]);
    assert.match(mustSucceed('status'), /is up to date/);
    // a second update is a no-op
    mustSucceed('update');
    assert.equal((await q("SELECT count(*)::int AS n FROM public.databasechangelog WHERE id = 'apollo-jobs-1'"))[0].n, 1);
  });

  it('the extension, the table with FKs to the host tables, and the scope bindings exist', async () => {
    assert.deepEqual(await q("SELECT extname, extversion FROM pg_catalog.pg_extension WHERE extname = 'apollo_jobs'"),
      [{ extname: 'apollo_jobs', extversion: VERSION }]);
    const fks = await q(`SELECT conname, confrelid::regclass::text AS target FROM pg_catalog.pg_constraint
                         WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype = 'f' ORDER BY conname`);
    assert.deepEqual(fks, [
      { conname: 'jobs_org_id_fkey', target: 'orgs' },
      { conname: 'jobs_project_id_fkey', target: 'projects' },
    ]);
    // the reads filter by bindings (rows), not by a view
    assert.deepEqual(await q(`SELECT scope, relation::text AS relation, key_column::text AS key, deleted_column::text AS deleted
                              FROM apollo_jobs.scopes ORDER BY scope`), [
      { scope: 'org', relation: 'orgs', key: 'nano_id', deleted: 'deleted' },
      { scope: 'project', relation: 'projects', key: 'nano_id', deleted: 'deleted' },
    ]);
    assert.deepEqual(await q("SELECT pg_catalog.to_regclass('apollo_jobs.visible_jobs')::text AS v"), [{ v: null }]);
    assert.deepEqual(await q(`SELECT c.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
                              WHERE x.indrelid = 'apollo_jobs.jobs'::regclass ORDER BY 1`), [
      { relname: 'jobs_org_listing_idx' }, { relname: 'jobs_pkey' },
      { relname: 'jobs_project_listing_idx' }, { relname: 'jobs_thermos_job_id_key' },
    ]);
  });

  it('the functions work on the migrated database', async () => {
    const args = ['wf-lq-1', 'project', 'org_acme', 'prj_acme_web', 'batch_revoke'];
    const [first] = await q('SELECT job_id::text, created FROM apollo_jobs.upsert_job_by_thermos_id($1, $2, $3, $4, $5)', args);
    assert.equal(first.created, true);
    const [again] = await q('SELECT job_id::text, created FROM apollo_jobs.upsert_job_by_thermos_id($1, $2, $3, $4, $5)', args);
    assert.deepEqual(again, { job_id: first.job_id, created: false });
    const got = await q('SELECT thermos_job_id FROM apollo_jobs.job_by_id($1, $2, $3)', [first.job_id, 'org_acme', 'prj_acme_web']);
    assert.deepEqual(got, [{ thermos_job_id: 'wf-lq-1' }]);
    const listed = await q('SELECT job_id::text FROM apollo_jobs.list_jobs(org_id => $1, project_id => $2)', ['org_acme', 'prj_acme_web']);
    assert.deepEqual(listed, [{ job_id: first.job_id }]);
    // soft-deleting the project hides the job from both reads
    await db.query("UPDATE public.projects SET deleted = true WHERE nano_id = 'prj_acme_web'");
    assert.deepEqual(await q('SELECT job_id FROM apollo_jobs.job_by_id($1, $2, $3)', [first.job_id, 'org_acme', 'prj_acme_web']), []);
    assert.deepEqual(await q('SELECT job_id FROM apollo_jobs.list_jobs(org_id => $1, project_id => $2)', ['org_acme', 'prj_acme_web']), []);
    await db.query("UPDATE public.projects SET deleted = false WHERE nano_id = 'prj_acme_web'");
    await q("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-lq-2', 'org', 'org_umbrella', NULL, 'batch_revoke')");
  });

  it('rollback-count is refused while job rows exist, and changes nothing', async () => {
    const r = liquibase('rollback-count', '--count=1');
    assert.notEqual(r.status, 0, r.out);
    assert.match(r.out, /apollo_jobs rollback refused: apollo_jobs\.jobs holds 2 job row\(s\)/);
    assert.match(r.out, /-Dapollo_jobs\.force_drop=true/);
    assert.equal((await q('SELECT count(*)::int AS n FROM apollo_jobs.jobs'))[0].n, 2);
    assert.equal((await changesetApplied()).length, 1);
    assert.deepEqual(await q('SELECT locked FROM public.databasechangeloglock'), [{ locked: false }]);
    assert.match(mustSucceed('status'), /is up to date/);
  });

  it('rollback-count with -Dapollo_jobs.force_drop=true drops it all: the database is as before', async () => {
    mustSucceed('rollback-count', '--count=1', '-Dapollo_jobs.force_drop=true');
    await assertAsBefore(baseline);
  });

  it('update again, then rollback-count of an empty jobs table needs no force', async () => {
    mustSucceed('update');
    assert.equal((await changesetApplied()).length, 1);
    assert.equal((await q('SELECT count(*)::int AS n FROM apollo_jobs.jobs'))[0].n, 0);
    mustSucceed('rollback-count', '--count=1');
    await assertAsBefore(baseline);
  });

  it('a view of the DBA\'s over apollo_jobs.jobs stops the rollback (no CASCADE), changing nothing', async () => {
    mustSucceed('update');
    await db.query('CREATE VIEW public.job_report AS SELECT org_id, count(*) AS jobs FROM apollo_jobs.jobs GROUP BY org_id');
    const r = liquibase('rollback-count', '--count=1');
    assert.notEqual(r.status, 0, r.out);
    assert.match(r.out, /cannot drop table apollo_jobs\.jobs because other objects depend on it/);
    assert.deepEqual(await q("SELECT pg_catalog.to_regclass('public.job_report')::text AS v"), [{ v: 'job_report' }]);
    assert.deepEqual(await q("SELECT extname FROM pg_catalog.pg_extension WHERE extname = 'apollo_jobs'"), [{ extname: 'apollo_jobs' }]);
    assert.equal((await changesetApplied()).length, 1);
    assert.deepEqual(await q('SELECT locked FROM public.databasechangeloglock'), [{ locked: false }]);
    await db.query('DROP VIEW public.job_report');
    mustSucceed('rollback-count', '--count=1');
    await assertAsBefore(baseline);
  });

  it('the rollback keeps a schema apollo_jobs that holds other objects', async () => {
    mustSucceed('update');
    await db.query('CREATE TABLE apollo_jobs.dba_notes (note text)');
    mustSucceed('rollback-count', '--count=1');
    assert.deepEqual(await q("SELECT extname FROM pg_catalog.pg_extension WHERE extname = 'apollo_jobs'"), []);
    assert.deepEqual(await q("SELECT pg_catalog.to_regclass('apollo_jobs.dba_notes')::text AS t"), [{ t: 'apollo_jobs.dba_notes' }]);
    await db.query('DROP SCHEMA apollo_jobs CASCADE');
    await assertAsBefore(baseline);
  });
});
