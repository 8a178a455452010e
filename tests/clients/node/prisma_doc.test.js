'use strict';
// PRISMA.md is documentation, but what it shows is checked here:
//  - its $queryRaw templates are exactly the statements node-postgres runs
//    (../sql/jobs.sql through ./sql.js), placeholders numbered as Prisma does;
//  - its schema passes Prisma's own validator (prisma-schema-wasm as shipped
//    with Prisma 6.12.0) and its models match the tables in a real database
//    built by create_jobs_table();
//  - its SQLSTATE -> HTTP table and code are the mapping jobs_api.js uses
//    (codes, classes, and which codes are retried).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const prismaSchema = require('@prisma/prisma-schema-wasm');
const { Client } = require('pg');
const { statements } = require('./sql');
const { STATUS_BY_SQLSTATE, STATUS_BY_SQLSTATE_CLASS, RETRY_SQLSTATES } = require('./jobs_api');
const { freshDatabase } = require('./db');

const DOC_PATH = path.join(__dirname, '..', 'PRISMA.md');
const doc = fs.readFileSync(DOC_PATH, 'utf8');

/** { name: SQL as Prisma sends it } for every "// sql: NAME" + $queryRaw`...` in the doc. */
function queryRawTemplates(markdown) {
  const found = {};
  const re = /\/\/ sql: ([a-z_][a-z0-9_]*)\n[^`]*?\$queryRaw(?:<[^>`]*>)?`([^`]*)`/g;
  for (const m of markdown.matchAll(re)) {
    assert.ok(!(m[1] in found), `statement ${m[1]} shown twice`);
    let n = 0;
    found[m[1]] = m[2].replace(/\$\{[^}]*\}/g, () => `$${++n}`);
  }
  return found;
}

/** The fenced block right after an HTML comment marker. */
function blockAfter(marker, lang) {
  const re = new RegExp(`<!-- ${marker} -->\\n\`\`\`${lang}\\n([\\s\\S]*?)\\n\`\`\`\\n`);
  const m = re.exec(doc);
  assert.ok(m, `no \`\`\`${lang} block after <!-- ${marker} --> in PRISMA.md`);
  return m[1];
}

describe('PRISMA.md: the SQL', () => {
  const templates = queryRawTemplates(doc);

  it('shows every statement of sql/jobs.sql, and no other', () => {
    assert.deepEqual(Object.keys(templates).sort(), Object.keys(statements).sort());
  });

  for (const name of Object.keys(statements)) {
    it(`$queryRaw for ${name} sends exactly the node-postgres statement`, () => {
      assert.equal(templates[name], statements[name]);
    });
  }
});

describe('PRISMA.md: SQLSTATE -> HTTP', () => {
  const table = doc.slice(doc.indexOf('<!-- sqlstate-http -->'));

  it('the table is the mapping jobs_api.js uses', () => {
    const rows = {};
    for (const m of table.matchAll(/^\| `([0-9A-Z]{5})` \| (\d{3}) \|/gm)) rows[m[1]] = Number(m[2]);
    assert.deepEqual(rows, { ...STATUS_BY_SQLSTATE });
    const classes = {};
    for (const m of table.matchAll(/^\| `([0-9A-Z]{2})xxx` \| (\d{3}) \|/gm)) classes[m[1]] = Number(m[2]);
    assert.deepEqual(classes, { ...STATUS_BY_SQLSTATE_CLASS });
  });

  /** The object literal of `const NAME` in the doc's TypeScript. */
  function tsObject(name) {
    const m = new RegExp(`const ${name}\\b[^{=]*=\\s*\\{([^}]*)\\}`).exec(doc);
    assert.ok(m, `no const ${name} in PRISMA.md`);
    const out = {};
    for (const p of m[1].matchAll(/'([0-9A-Z]{2,5})': (\d{3})/g)) out[p[1]] = Number(p[2]);
    return out;
  }

  it('the TypeScript STATUS_BY_SQLSTATE is the same mapping', () => {
    assert.deepEqual(tsObject('STATUS_BY_SQLSTATE'), { ...STATUS_BY_SQLSTATE });
  });

  it('the TypeScript STATUS_BY_SQLSTATE_CLASS and RETRY_SQLSTATES are the same', () => {
    assert.deepEqual(tsObject('STATUS_BY_SQLSTATE_CLASS'), { ...STATUS_BY_SQLSTATE_CLASS });
    const m = /const RETRY_SQLSTATES = \[([^\]]*)\]/.exec(doc);
    assert.ok(m);
    assert.deepEqual([...m[1].matchAll(/'([0-9A-Z]{5})'/g)].map((x) => x[1]), [...RETRY_SQLSTATES]);
  });
});

describe('PRISMA.md: the schema', () => {
  const schema = blockAfter('prisma-schema', 'prisma');
  const params = JSON.stringify({ prismaSchema: [['schema.prisma', schema]], noColor: true });
  let db;

  before(async () => {
    await freshDatabase('prisma_doc');
    db = new Client({ user: 'postgres', database: 'prisma_doc' });
    await db.connect();
  });
  after(async () => db?.end());

  it('passes Prisma\'s schema validation', () => {
    assert.doesNotThrow(() => prismaSchema.validate(params));
    const warnings = JSON.parse(prismaSchema.lint(JSON.stringify([['schema.prisma', schema]])));
    assert.deepEqual(warnings, []);
  });

  const dmmf = JSON.parse(prismaSchema.get_dmmf(params)).datamodel;
  const PRISMA_TYPE = { text: 'String', boolean: 'Boolean', 'timestamp with time zone': 'DateTime' };

  for (const model of dmmf.models) {
    it(`model ${model.name} matches ${model.schema}.${model.dbName} column for column`, async () => {
      const { rows } = await db.query(
        `SELECT a.attname AS column, a.attnotnull AS not_null,
                pg_catalog.format_type(COALESCE(NULLIF(t.typbasetype, 0), a.atttypid), NULL) AS base_type
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
        [`${model.schema}.${model.dbName}`]);
      assert.ok(rows.length > 0, `no table ${model.schema}.${model.dbName}`);
      const fields = model.fields.filter((f) => f.kind === 'scalar')
        .map((f) => ({ column: f.dbName ?? f.name, not_null: f.isRequired, type: f.type }));
      const columns = rows.map((r) => ({ column: r.column, not_null: r.not_null, type: PRISMA_TYPE[r.base_type] ?? r.base_type }));
      assert.deepEqual(fields, columns);
    });
  }

  it('the Job model is apollo_jobs.jobs, its job_id text (the functions return the domain), its keys and indexes as in the database', async () => {
    const job = dmmf.models.find((m) => m.name === 'Job');
    assert.equal(job.schema, 'apollo_jobs');
    assert.equal(job.dbName, 'jobs');
    const { rows: [jobIdType] } = await db.query(
      "SELECT a.atttypid::regtype::text AS t FROM pg_catalog.pg_attribute a WHERE a.attrelid = 'apollo_jobs.jobs'::regclass AND a.attname = 'job_id'");
    assert.equal(jobIdType.t, 'text');
    assert.equal(job.fields.find((f) => f.dbName === 'job_id').type, 'String');
    for (const fn of ['upsert_job_by_thermos_id', 'job_by_id', 'list_jobs']) {
      const { rows: [r] } = await db.query(
        `SELECT pg_catalog.pg_get_function_result(p.oid) AS result FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'apollo_jobs'::regnamespace AND p.proname = $1`, [fn]);
      assert.match(r.result, /^TABLE\(job_id apollo_jobs\.job_id,/, fn);
    }

    // type:name:column[ DESC],... for every index
    const indexes = dmmf.indexes.filter((i) => i.model === 'Job')
      .map((i) => `${i.type}:${i.dbName}:${i.fields.map((f) =>
        job.fields.find((x) => x.name === f.name).dbName + (f.sortOrder === 'desc' ? ' DESC' : '')).join(',')}`).sort();
    const { rows } = await db.query(
      `SELECT CASE WHEN x.indisprimary THEN 'id' WHEN x.indisunique THEN 'unique' ELSE 'normal' END || ':' || c.relname || ':' ||
              (SELECT string_agg(a.attname || CASE WHEN x.indoption[k.ord - 1] & 1 = 1 THEN ' DESC' ELSE '' END, ',' ORDER BY k.ord)
               FROM unnest(x.indkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum) AS idx,
              x.indpred IS NOT NULL AS partial
       FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
       WHERE x.indrelid = 'apollo_jobs.jobs'::regclass ORDER BY 1`);
    // the partial index is documented as not expressible
    assert.deepEqual(rows.filter((r) => r.partial).map((r) => r.idx),
      ['normal:jobs_project_listing_idx:project_id,created_at DESC,job_id DESC']);
    assert.ok(doc.includes('jobs_project_listing_idx (project_id, created_at DESC, job_id DESC)'));
    assert.deepEqual(indexes, rows.filter((r) => !r.partial).map((r) => r.idx));
  });

  it('the relations are the database FKs: same names, same cascades', async () => {
    const { rows } = await db.query(
      `SELECT conname, confdeltype, confupdtype FROM pg_catalog.pg_constraint
       WHERE contype = 'f' AND conrelid IN ('apollo_jobs.jobs'::regclass, 'public.projects'::regclass) ORDER BY conname`);
    const ACTION = { a: 'NoAction', c: 'Cascade', r: 'Restrict', n: 'SetNull', d: 'SetDefault' };
    const inDb = rows.map((r) => `${r.conname}:${ACTION[r.confdeltype]}:${ACTION[r.confupdtype]}`);
    const inDoc = [...schema.matchAll(/onDelete: (\w+), onUpdate: (\w+), map: "(\w+)"/g)].map((m) => `${m[3]}:${m[1]}:${m[2]}`).sort();
    assert.deepEqual(inDoc, inDb);
  });
});
