'use strict';
// Test helpers: scratch databases on the cluster in PGHOST/PGPORT (set by
// tests/clients/run.sh), built from the shared host tables
// (tests/fixture/host.sql) and ../fixture/*.sql.

const fs = require('node:fs');
const path = require('node:path');
const { Client, Pool } = require('pg');

const FIXTURE = path.join(__dirname, '..', 'fixture');
const fixture = (name) => fs.readFileSync(path.join(FIXTURE, name), 'utf8');
const HOST_TABLES = path.join(__dirname, '..', '..', 'fixture', 'host.sql');

async function withClient(config, fn) {
  const client = new Client(config);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Drops and re-creates `database` with the host tables and the extension, and the jobs table unless jobsTable is false. */
async function freshDatabase(database, { jobsTable = true } = {}) {
  await withClient({ user: 'postgres', database: 'postgres' }, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${database}`);
  });
  await withClient({ user: 'postgres', database }, async (c) => {
    await c.query(fs.readFileSync(HOST_TABLES, 'utf8'));
    await c.query(fixture('service.sql'));
    if (jobsTable) await c.query(fixture('jobs.sql'));
  });
}

const pool = (user, database, max = 10) => new Pool({ user, database, max });

/** Polls `probe` until it returns true (or throws after `ms`). */
async function waitFor(probe, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One HTTP request to an example service at `base`: status, headers and the JSON body. */
async function call(base, method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/** POST /v1/jobs: a registration. */
const post = (base, body) => call(base, 'POST', '/v1/jobs', body);

module.exports = { freshDatabase, withClient, pool, waitFor, call, post };
