// PRISMA.md run for real with Prisma 7. Its prisma.config.ts, schema.prisma
// and service code (jobs.ts) are the files in this directory, shown verbatim
// in PRISMA.md (checked here). They are copied with package.json and
// tsconfig.json into an output directory (APOLLO_PRISMA_OUT, else a temporary
// one), `prisma generate` writes the client there offline, `tsc` type-checks
// the code against it, and the code runs with @prisma/adapter-pg:
//   - create (202, then 409 with the same id), poll (job_by_id: 200, 404 for
//     another tenant), list (list_jobs, pages chained by the cursor), and the
//     Job model's own reads (findUnique, findMany) on apollo_jobs.jobs;
//   - the SQL Prisma sends is the node-postgres example's (sql/jobs.sql);
//   - the schema's models are the database's tables (columns, keys, indexes,
//     foreign keys);
//   - the SQLSTATE -> HTTP mapping with the errors Prisma really throws.
//
// Connections: fixtures go to PGHOST/PGPORT as postgres; the service roles'
// connections go to SERVICE_PGHOST/SERVICE_PGPORT when set (tests/poolers:
// pgbouncer), else to the same server. SERVICE_POOL_MODE=transaction skips the
// test that needs a server session of its own.
//
//   cd tests/clients && node --import tsx --test prisma/prisma.test.ts

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PrismaPg } from '@prisma/adapter-pg';
import prismaSchema from '@prisma/prisma-schema-wasm';
import pg from 'pg';

const require = createRequire(import.meta.url);
const { freshDatabase, withClient, waitFor } = require('../node/db.js');
const { statements } = require('../node/sql.js');
const nodeApi = require('../node/jobs_api.js');

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENTS = path.dirname(HERE);
const DOC = fs.readFileSync(path.join(CLIENTS, 'PRISMA.md'), 'utf8');
/** The files PRISMA.md shows. */
const SHOWN = ['prisma.config.ts', 'schema.prisma', 'jobs.ts'];
const DB = 'prisma_api';
const JOB_ID = /^(oj|pj)_[0-9A-Za-z]{21}$/;

const SERVICE_HOST = process.env.SERVICE_PGPORT ? (process.env.SERVICE_PGHOST ?? '127.0.0.1') : (process.env.PGHOST ?? 'localhost');
const SERVICE_PORT = process.env.SERVICE_PGPORT ?? process.env.PGPORT ?? '5432';
const sessionBound = (why: string) =>
  (process.env.SERVICE_POOL_MODE === 'transaction' ? { skip: `needs its own server session: ${why}` } : {});

/** A DATABASE_URL for a service role (a unix socket directory goes in ?host=). */
const serviceUrl = (user: string, host = SERVICE_HOST, port = SERVICE_PORT) =>
  `postgresql://${user}@localhost:${port}/${DB}?host=${encodeURIComponent(host)}&application_name=prisma_${user}`;

const OUT = process.env.APOLLO_PRISMA_OUT ?? fs.mkdtempSync(path.join(os.tmpdir(), 'apollo-prisma-'));
const STUB = path.join(OUT, 'no-schema-engine');
const STUB_RAN = path.join(OUT, 'schema-engine-ran');

/** The fenced blocks after each <!-- file: NAME --> in PRISMA.md, joined by a blank line. */
function docFile(name: string): string | undefined {
  const marker = `<!-- file: ${name} -->\n`;
  const blocks: string[] = [];
  for (let at = DOC.indexOf(marker); at >= 0; at = DOC.indexOf(marker, at + 1)) {
    const m = /^```[a-z]*\n([\s\S]*?)^```$/m.exec(DOC.slice(at + marker.length));
    assert.ok(m, `no fenced block after ${marker.trim()}`);
    blocks.push(m[1]);
  }
  return blocks.length ? blocks.join('\n') : undefined;
}

type Api = typeof import('./jobs.ts');
type Generated = typeof import('./generated/client.ts');
let api: Api;
let generated: Generated;
let generateOutput = '';
const clients: { $disconnect(): Promise<void> }[] = [];
const sent: string[] = []; // every statement the service's clients sent

function client(user: string, { url = serviceUrl(user), onPoolError }: { url?: string; onPoolError?: (e: Error) => void } = {}) {
  const adapter = new PrismaPg({ connectionString: url }, { onPoolError });
  const prisma = new generated.PrismaClient({ adapter, log: [{ emit: 'event', level: 'query' }] });
  prisma.$on('query', (e) => sent.push(e.query));
  clients.push(prisma);
  return prisma;
}

/** What a rejected promise threw. */
async function thrown(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  return assert.fail('expected an error');
}

const asPostgres = <T>(fn: (c: pg.Client) => Promise<T>) => withClient({ user: 'postgres', database: DB }, fn);

const orgJob = (thermosJobId: string, more = {}) =>
  ({ thermosJobId, jobClass: 'org' as const, orgId: 'org_acme', projectId: null, jobType: 'batch_revoke', ...more });
const projectJob = (thermosJobId: string, more = {}) =>
  ({ thermosJobId, jobClass: 'project' as const, orgId: 'org_acme', projectId: 'prj_acme_web', jobType: 'batch_revoke', ...more });

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  fs.rmSync(path.join(OUT, 'generated'), { recursive: true, force: true });
  fs.rmSync(STUB_RAN, { force: true });
  for (const f of [...SHOWN, 'package.json', 'tsconfig.json']) fs.copyFileSync(path.join(HERE, f), path.join(OUT, f));
  // the copy resolves its packages from tests/clients
  fs.rmSync(path.join(OUT, 'node_modules'), { force: true });
  fs.symlinkSync(path.join(CLIENTS, 'node_modules'), path.join(OUT, 'node_modules'));
  // Prisma 7's client needs no engine binary; the CLI only insists that a
  // schema engine (migrate, db pull) exists, and would download one.
  fs.writeFileSync(STUB, `#!/bin/sh\necho "no schema engine here" >&2\ntouch '${STUB_RAN}'\nexit 1\n`, { mode: 0o755 });
  generateOutput = execFileSync(process.execPath, [path.join(CLIENTS, 'node_modules/prisma/build/index.js'), 'generate'], {
    cwd: OUT,
    env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: STUB, DATABASE_URL: serviceUrl('apollo_api'), CHECKPOINT_DISABLE: '1', NO_COLOR: '1' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  generated = await import(pathToFileURL(path.join(OUT, 'generated/client.ts')).href);
  api = await import(pathToFileURL(path.join(OUT, 'jobs.ts')).href);

  await freshDatabase(DB);
  // another tenant's job, for the isolation checks
  await asPostgres((c) => c.query(
    "SELECT apollo_jobs.upsert_job_by_thermos_id('wf-umbrella', 'org', 'org_umbrella', NULL, 'batch_revoke')"));
});

after(async () => {
  await Promise.all(clients.map((c) => c.$disconnect()));
  if (!process.env.APOLLO_PRISMA_OUT) fs.rmSync(OUT, { recursive: true, force: true });
});

describe('PRISMA.md and the files it shows', () => {
  for (const f of SHOWN) {
    it(`shows prisma/${f} as it is`, () => {
      assert.equal(docFile(f), fs.readFileSync(path.join(HERE, f), 'utf8'));
    });
  }

  it('prisma generate wrote the client offline, without running a schema engine', () => {
    const version = require('@prisma/client/package.json').version;
    assert.match(version, /^7\./);
    assert.match(generateOutput, new RegExp(`Generated Prisma Client \\(${version.replace(/\./g, '\\.')}\\) to \\./generated`));
    assert.ok(fs.existsSync(path.join(OUT, 'generated/client.ts')));
    assert.ok(!fs.existsSync(STUB_RAN), 'prisma generate ran the schema engine');
  });

  it('tsc type-checks prisma.config.ts and jobs.ts against the generated client', () => {
    execFileSync(process.execPath, [path.join(CLIENTS, 'node_modules/typescript/bin/tsc'), '-p', OUT], { stdio: 'inherit' });
  });

  it('the $queryRaw templates are the node-postgres statements (sql/jobs.sql)', () => {
    const src = fs.readFileSync(path.join(HERE, 'jobs.ts'), 'utf8');
    const found: Record<string, string> = {};
    for (const m of src.matchAll(/\/\/ sql: ([a-z_][a-z0-9_]*)\n[^`]*?\$queryRaw(?:<[^>`]*>)?`([^`]*)`/g)) {
      let n = 0;
      found[m[1]] = m[2].replace(/\$\{[^}]*\}/g, () => `$${++n}`);
    }
    assert.deepEqual(found, { ...statements });
  });

  it('the SQLSTATE table is the mapping jobs.ts and the node-postgres example use', () => {
    const table = DOC.slice(DOC.indexOf('<!-- sqlstate-http -->'));
    const rows: Record<string, number> = {};
    for (const m of table.matchAll(/^\| `([0-9A-Z]{5})` \| (\d{3}) \|/gm)) rows[m[1]] = Number(m[2]);
    const classes: Record<string, number> = {};
    for (const m of table.matchAll(/^\| `([0-9A-Z]{2})xxx` \| (\d{3}) \|/gm)) classes[m[1]] = Number(m[2]);
    assert.deepEqual(rows, { ...nodeApi.STATUS_BY_SQLSTATE });
    assert.deepEqual(api.STATUS_BY_SQLSTATE, rows);
    assert.deepEqual(classes, { ...nodeApi.STATUS_BY_SQLSTATE_CLASS });
    assert.deepEqual(api.STATUS_BY_SQLSTATE_CLASS, classes);
    assert.deepEqual(api.RETRY_SQLSTATES, [...nodeApi.RETRY_SQLSTATES]);
  });
});

describe('the schema is the database', () => {
  const schema = fs.readFileSync(path.join(HERE, 'schema.prisma'), 'utf8');
  const dmmf = JSON.parse(prismaSchema.get_dmmf(JSON.stringify({ prismaSchema: [['schema.prisma', schema]], noColor: true }))).datamodel;
  const PRISMA_TYPE: Record<string, string> = { text: 'String', boolean: 'Boolean', 'timestamp with time zone': 'DateTime' };

  it('has no lint warnings', () => {
    assert.deepEqual(JSON.parse(prismaSchema.lint(JSON.stringify([['schema.prisma', schema]]))), []);
  });

  for (const model of dmmf.models) {
    it(`model ${model.name} matches ${model.schema}.${model.dbName} column for column`, async () => {
      const { rows } = await asPostgres((c) => c.query(
        `SELECT a.attname AS column, a.attnotnull AS not_null,
                pg_catalog.format_type(COALESCE(NULLIF(t.typbasetype, 0), a.atttypid), NULL) AS base_type
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
        [`${model.schema}.${model.dbName}`]));
      assert.ok(rows.length > 0, `no table ${model.schema}.${model.dbName}`);
      const fields = model.fields.filter((f: any) => f.kind === 'scalar')
        .map((f: any) => ({ column: f.dbName ?? f.name, not_null: f.isRequired, type: f.type }));
      const columns = rows.map((r: any) => ({ column: r.column, not_null: r.not_null, type: PRISMA_TYPE[r.base_type] ?? r.base_type }));
      assert.deepEqual(fields, columns);
    });
  }

  it('Job: job_id is text (the functions return the domain), keys and indexes as in the database', async () => {
    const job = dmmf.models.find((m: any) => m.name === 'Job');
    assert.equal(`${job.schema}.${job.dbName}`, 'apollo_jobs.jobs');
    await asPostgres(async (c) => {
      const { rows: [jobIdType] } = await c.query(
        "SELECT a.atttypid::regtype::text AS t FROM pg_catalog.pg_attribute a WHERE a.attrelid = 'apollo_jobs.jobs'::regclass AND a.attname = 'job_id'");
      assert.equal(jobIdType.t, 'text');
      for (const fn of ['upsert_job_by_thermos_id', 'job_by_id', 'list_jobs']) {
        const { rows: [r] } = await c.query(
          `SELECT pg_catalog.pg_get_function_result(p.oid) AS result FROM pg_catalog.pg_proc p
           WHERE p.pronamespace = 'apollo_jobs'::regnamespace AND p.proname = $1`, [fn]);
        assert.match(r.result, /^TABLE\(job_id apollo_jobs\.job_id,/, fn);
      }
      // type:name:column[ DESC],... for every index
      const indexes = dmmf.indexes.filter((i: any) => i.model === 'Job')
        .map((i: any) => `${i.type}:${i.dbName}:${i.fields.map((f: any) =>
          job.fields.find((x: any) => x.name === f.name).dbName + (f.sortOrder === 'desc' ? ' DESC' : '')).join(',')}`).sort();
      const { rows } = await c.query(
        `SELECT CASE WHEN x.indisprimary THEN 'id' WHEN x.indisunique THEN 'unique' ELSE 'normal' END || ':' || c.relname || ':' ||
                (SELECT string_agg(a.attname || CASE WHEN x.indoption[k.ord - 1] & 1 = 1 THEN ' DESC' ELSE '' END, ',' ORDER BY k.ord)
                 FROM unnest(x.indkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum) AS idx,
                x.indpred IS NOT NULL AS partial
         FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
         WHERE x.indrelid = 'apollo_jobs.jobs'::regclass ORDER BY 1`);
      // the partial index, which a Prisma schema cannot express, is named in a comment
      assert.deepEqual(rows.filter((r: any) => r.partial).map((r: any) => r.idx),
        ['normal:jobs_project_listing_idx:project_id,created_at DESC,job_id DESC']);
      assert.ok(schema.includes('jobs_project_listing_idx (project_id, created_at DESC, job_id DESC)'));
      assert.deepEqual(indexes, rows.filter((r: any) => !r.partial).map((r: any) => r.idx));
    });
  });

  it('the relations are the database\'s foreign keys: same names, same actions', async () => {
    const { rows } = await asPostgres((c) => c.query(
      `SELECT conname, confdeltype, confupdtype FROM pg_catalog.pg_constraint
       WHERE contype = 'f' AND conrelid IN ('apollo_jobs.jobs'::regclass, 'public.projects'::regclass) ORDER BY conname`));
    const ACTION: Record<string, string> = { a: 'NoAction', c: 'Cascade', r: 'Restrict', n: 'SetNull', d: 'SetDefault' };
    const inDb = rows.map((r: any) => `${r.conname}:${ACTION[r.confdeltype]}:${ACTION[r.confupdtype]}`);
    const inSchema = [...schema.matchAll(/onDelete: (\w+), onUpdate: (\w+), map: "(\w+)"/g)].map((m) => `${m[3]}:${m[1]}:${m[2]}`).sort();
    assert.deepEqual(inSchema, inDb);
  });
});

describe('the service over Prisma 7 and @prisma/adapter-pg', () => {
  let prisma: InstanceType<Generated['PrismaClient']>;
  before(() => { prisma = client('apollo_api'); });

  it('creates an org job: 202, then the same workflow again: 409 with the same id', async () => {
    const first = await api.createJob(prisma, orgJob('wf-org-1'));
    assert.equal(first.status, 202);
    assert.equal(first.body.created, true);
    assert.match(first.body.job_id, /^oj_/);
    assert.match(first.body.job_id, JOB_ID);
    const again = await api.createJob(prisma, orgJob('wf-org-1'));
    assert.equal(again.status, 409);
    assert.deepEqual(again.body, { job_id: first.body.job_id, created: false });
  });

  it('polls through job_by_id: 200 for its own tenant, 404 for another, unknown or malformed', async () => {
    const { body: { job_id } } = await api.createJob(prisma, projectJob('wf-prj-1'));
    assert.match(job_id, /^pj_/);
    const row = await api.jobById(prisma, job_id, 'org_acme', 'prj_acme_web');
    assert.ok(row);
    assert.deepEqual({ ...row, created_at: undefined }, {
      job_id, job_class: 'project', org_id: 'org_acme', project_id: 'prj_acme_web', job_type: 'batch_revoke',
      thermos_job_id: 'wf-prj-1', created_at: undefined,
    });
    assert.ok(row.created_at instanceof Date);
    for (const [org, prj] of [['org_acme', null], ['org_umbrella', 'prj_umbrella_lab'], ['org_acme', 'prj_acme_old']] as const) {
      assert.equal(await api.jobById(prisma, job_id, org, prj), null, `${org}/${prj}`);
    }
    assert.equal(await api.jobById(prisma, 'pj_000000000000000000000', 'org_acme', 'prj_acme_web'), null);
    assert.equal(await api.jobById(prisma, 'not-a-job-id', 'org_acme', 'prj_acme_web'), null);
  });

  it('reads the Job model: findUnique by id and by thermos id, typed and mapped', async () => {
    const { body: { job_id } } = await api.createJob(prisma, projectJob('wf-prj-2', { jobType: 'revoke_keys' }));
    const viaGetter = await api.jobById(prisma, job_id, 'org_acme', 'prj_acme_web');
    const job = await prisma.job.findUnique({ where: { jobId: job_id } });
    assert.deepEqual(job, {
      jobId: job_id, jobClass: 'project', orgId: 'org_acme', projectId: 'prj_acme_web', jobType: 'revoke_keys',
      thermosJobId: 'wf-prj-2', createdAt: viaGetter?.created_at,
    });
    assert.deepEqual(await prisma.job.findUnique({ where: { thermosJobId: 'wf-prj-2' } }), job);
    const withOrg = await prisma.job.findUnique({ where: { jobId: job_id }, include: { org: true, project: { select: { nanoId: true } } } });
    assert.deepEqual(withOrg?.org, { nanoId: 'org_acme', deleted: false });
    assert.equal(withOrg?.project?.nanoId, 'prj_acme_web');
  });

  it('lists through list_jobs, page by page with the cursor, as findMany orders them', async () => {
    const orgId = 'org_umbrella';
    for (let i = 0; i < 5; i++) assert.equal((await api.createJob(prisma, orgJob(`wf-list-${i}`, { orgId }))).status, 202);
    const seen: string[] = [];
    let page = await api.listJobs(prisma, { orgId, limit: 2 });
    for (let n = 0; ; n++) {
      assert.ok(n < 10, 'the cursor does not advance');
      seen.push(...page.data.map((r) => r.job_id));
      if (!page.has_more) break;
      assert.equal(page.next_cursor, page.data.at(-1)?.job_id);
      page = await api.listJobs(prisma, { orgId, limit: 2, startingAfter: page.next_cursor });
    }
    const model = await prisma.job.findMany({
      where: { orgId, projectId: null }, orderBy: [{ createdAt: 'desc' }, { jobId: 'desc' }], select: { jobId: true },
    });
    assert.equal(model.length, 6); // the five and wf-umbrella
    assert.deepEqual(seen, model.map((j) => j.jobId));
    // another org's listing does not see them
    assert.ok((await api.listJobs(prisma, { orgId: 'org_acme', limit: 1000 })).data.every((r) => r.org_id === 'org_acme'));
  });

  it('sends the node-postgres example\'s statements', () => {
    for (const name of ['upsert_job', 'job_by_id', 'list_jobs']) {
      assert.ok(sent.includes(statements[name]), `${name} not sent as in sql/jobs.sql`);
    }
  });
});

describe('SQLSTATE -> HTTP with the errors Prisma throws', () => {
  let prisma: InstanceType<Generated['PrismaClient']>;
  before(() => { prisma = client('apollo_api'); });

  /** createJob's answer and the SQLSTATE of the error behind it. */
  async function failing(p: InstanceType<Generated['PrismaClient']>, input: Parameters<Api['upsertJob']>[1]) {
    const e = await thrown(api.upsertJob(p, input));
    assert.ok(e instanceof generated.Prisma.PrismaClientKnownRequestError, String(e));
    assert.equal(e.code, 'P2010'); // "Raw query failed"
    return { sqlstate: api.sqlstateOf(e), response: await api.createJob(p, input) };
  }

  it('22023 bad argument: 400 with the server\'s message', async () => {
    const r = await failing(prisma, projectJob('wf-e1', { projectId: null }));
    assert.equal(r.sqlstate, '22023');
    assert.equal(r.response.status, 400);
    assert.deepEqual(r.response.body, { error: 'invalid_argument', message: 'project_id is required for a project job' });
    const e = await thrown(api.listJobs(prisma, { orgId: 'org_acme', limit: 0 }));
    assert.equal(api.sqlstateOf(e), '22023');
    assert.equal(api.httpStatusOf(e), 400);
  });

  it('22003 a limit beyond integer (the server\'s cast): 400', async () => {
    const e = await thrown(api.listJobs(prisma, { orgId: 'org_acme', limit: 2 ** 31 }));
    assert.equal(api.sqlstateOf(e), '22003');
    assert.equal(api.httpStatusOf(e), 400);
  });

  it('23503 unknown org: 404; 23505 the workflow is another tenant\'s: 409 without details', async () => {
    const unknown = await failing(prisma, orgJob('wf-e2', { orgId: 'org_nope' }));
    assert.equal(unknown.sqlstate, '23503');
    assert.equal(unknown.response.status, 404);
    const mine = await api.createJob(prisma, projectJob('wf-taken'));
    assert.equal(mine.status, 202);
    const theirs = await failing(prisma, projectJob('wf-taken', { orgId: 'org_umbrella', projectId: 'prj_umbrella_lab' }));
    assert.equal(theirs.sqlstate, '23505');
    assert.equal(theirs.response.status, 409);
    assert.deepEqual(theirs.response.body, { error: '409' });
  });

  it('42501 a role without the grants: 500 with no details', async () => {
    const r = await failing(client('apollo_nobody'), orgJob('wf-e3'));
    assert.equal(r.sqlstate, '42501');
    assert.equal(r.response.status, 500);
    assert.deepEqual(r.response.body, { error: '500' });
  });

  it('25006 a write in a read-only transaction: 503 with Retry-After; reads still answer', async () => {
    const e = await thrown(prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SET TRANSACTION READ ONLY`;
      assert.equal((await api.listJobs(tx, { orgId: 'org_acme', limit: 1 })).data.length, 1);
      return api.upsertJob(tx, orgJob('wf-e4'));
    }));
    assert.equal(api.sqlstateOf(e), '25006');
    assert.equal(api.httpStatusOf(e), 503);
    assert.equal(await prisma.job.findUnique({ where: { thermosJobId: 'wf-e4' } }), null);
  });

  it('prisma.job.update: 42501 for the service (no UPDATE grant), 0A000 for the table\'s owner (immutable): 500', async () => {
    const { body: { job_id } } = await api.createJob(prisma, orgJob('wf-e5'));
    const owner = client('postgres', { url: serviceUrl('postgres', process.env.PGHOST, process.env.PGPORT) });
    for (const [p, sqlstate] of [[prisma, '42501'], [owner, '0A000']] as const) {
      const e = await thrown(p.job.update({ where: { jobId: job_id }, data: { jobType: 'other' } }));
      assert.ok(e instanceof generated.Prisma.PrismaClientKnownRequestError);
      assert.equal(e.code, 'P2039'); // a model query's "Database error"
      assert.equal(api.sqlstateOf(e), sqlstate);
      assert.equal(api.httpStatusOf(e), 500);
    }
    assert.equal((await prisma.job.findUnique({ where: { jobId: job_id } }))?.jobType, 'batch_revoke');
  });

  /** `call` (as apollo_api_rr, REPEATABLE READ) races a registration of `thermos` that commits while it waits. */
  async function raceAgainstUncommitted<T>(thermos: string, call: () => Promise<T>) {
    const holder = new pg.Client({ user: 'postgres', database: DB });
    const watcher = new pg.Client({ user: 'postgres', database: DB }); // pg_stat_activity is read once per transaction
    await holder.connect();
    await watcher.connect();
    try {
      await holder.query('BEGIN');
      const held = (await holder.query(statements.upsert_job, [thermos, 'org', 'org_acme', null, 'batch_revoke'])).rows[0];
      const pending = call().then((value) => ({ value }), (error) => ({ error }));
      await waitFor(async () => (await watcher.query(
        "SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity WHERE usename = 'apollo_api_rr' AND wait_event_type = 'Lock'")).rows[0].n > 0);
      await holder.query('COMMIT');
      return { held, ...(await pending) } as { held: { job_id: string }; value?: T; error?: any };
    } finally {
      await holder.end();
      await watcher.end();
    }
  }

  it('40001 under REPEATABLE READ: P2010 with the SQLSTATE; createJob retries it into a 409 with the winner\'s id', async () => {
    const rr = client('apollo_api_rr');
    const lost = await raceAgainstUncommitted('wf-race-1', () => api.upsertJob(rr, orgJob('wf-race-1')));
    assert.equal(lost.error?.code, 'P2010');
    assert.equal(api.sqlstateOf(lost.error), '40001');
    assert.equal(api.httpStatusOf(lost.error), 503);
    const retried = await raceAgainstUncommitted('wf-race-2', () => api.createJob(rr, orgJob('wf-race-2')));
    assert.deepEqual(retried.value, { status: 409, body: { job_id: retried.held.job_id, created: false } });
  });

  it('a server that cannot be reached (unix socket, TCP): 503 with Retry-After', async () => {
    // a socket directory with no server in it
    const noSocket = client('apollo_api', { url: serviceUrl('apollo_api', OUT) });
    const e = await thrown(api.upsertJob(noSocket, orgJob('wf-e6')));
    assert.equal(e.code, 'ENOENT');
    // a loopback port that was just closed
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    const refused = client('apollo_api', { url: serviceUrl('apollo_api', '127.0.0.1', String(port)) });
    const e2 = await thrown(api.upsertJob(refused, orgJob('wf-e6')));
    assert.equal(e2.code, 'P2010');
    assert.equal(e2.meta.driverAdapterError.cause.kind, 'DatabaseNotReachable');
    for (const p of [noSocket, refused]) {
      const r = await api.createJob(p, orgJob('wf-e6'));
      assert.equal(r.status, 503);
      assert.deepEqual(r.headers, { 'Retry-After': '1' });
      assert.deepEqual(r.body, { error: '503' });
    }
  });

  it('57P01 the server terminated the pool\'s connection: the next call gets a new one',
    sessionBound('pg_terminate_backend of the pool\'s own server session'), async () => {
      const poolErrors: Error[] = [];
      const p = client('apollo_api', { url: `${serviceUrl('apollo_api')}_terminated`, onPoolError: (e) => poolErrors.push(e) });
      assert.equal((await api.createJob(p, orgJob('wf-t1'))).status, 202);
      const { rows } = await asPostgres((c) => c.query(
        "SELECT pg_catalog.pg_terminate_backend(pid, 10000) AS gone FROM pg_catalog.pg_stat_activity WHERE application_name = 'prisma_apollo_api_terminated'"));
      assert.deepEqual(rows.map((r: any) => r.gone), [true]);
      await waitFor(async () => poolErrors.length > 0);
      assert.equal((poolErrors[0] as any).code, '57P01');
      assert.equal((await api.createJob(p, orgJob('wf-t1'))).status, 409);
    });
});
