'use strict';
// node-postgres behind pgbouncer in transaction pooling, through the
// "pooled_single" database entry (pool_size = 1: every client shares one
// server session). A named prepared statement ({ name, text }) is parsed
// once per client connection and then run by name: the second client's Parse
// of the same name on the shared session fails with 42P05. The example's
// unnamed statements (pool.query(text, values)) never do.
// Usage: node named.js PGBOUNCER_PORT; prints one line, exits 1 on a failure.

const path = require('node:path');
const { Client } = require(path.join(__dirname, '..', 'clients', 'node_modules', 'pg'));
const { JOB_BY_ID } = require(path.join(__dirname, '..', 'clients', 'node', 'sql'));

const config = { host: '127.0.0.1', port: Number(process.argv[2]), database: 'pooled_single', user: 'apollo_api' };
const params = ['oj_000000000000000000000', 'org_acme', null];

async function main() {
  const a = new Client(config);
  const b = new Client(config);
  await a.connect();
  await b.connect();
  const failures = [];
  let named = null;
  try {
    await a.query({ name: 'job_by_id', text: JOB_BY_ID, values: params });
    named = await b.query({ name: 'job_by_id', text: JOB_BY_ID, values: params }).then(() => null, (e) => e.code ?? String(e));
    if (named !== '42P05') failures.push(`named statement: expected 42P05 from the second client, got ${named ?? 'no error'}`);
    let errors = 0;
    for (let i = 0; i < 30; i++) {
      for (const c of [a, b]) {
        try {
          await c.query(JOB_BY_ID, params);
        } catch (e) {
          errors++;
          failures.push(`unnamed statement: ${e.code} ${e.message}`);
        }
      }
    }
    console.log(`poolers: node-postgres: a named statement failed with ${named} on the second client; `
      + `unnamed: 60 executions over 2 clients, ${errors} errors`);
  } finally {
    await a.end();
    await b.end();
  }
  for (const f of failures) console.log(`poolers: FAIL: node-postgres: ${f}`);
  process.exitCode = failures.length ? 1 : 0;
}

main().catch((e) => { console.log(`poolers: FAIL: node-postgres: ${e.stack}`); process.exitCode = 1; });
