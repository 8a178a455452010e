'use strict';
// The SQL text the service sends, loaded from ../sql/jobs.sql (the single
// copy shared with the psycopg example and checked against PRISMA.md).
//
//   const { UPSERT_JOB, JOB_BY_ID, LIST_JOBS } = require('./sql');
//   await pool.query(UPSERT_JOB, [thermosJobId, jobClass, orgId, projectId, jobType]);
//   await pool.query(JOB_BY_ID, [jobId, orgId, projectId]);
//   await pool.query(LIST_JOBS, [orgId, projectId, includeProjectJobs, jobType, startingAfter, pageSize]);

const fs = require('node:fs');
const path = require('node:path');

const SQL_FILE = path.join(__dirname, '..', 'sql', 'jobs.sql');

/** Parses "-- name: NAME" sections into { NAME: statement text }. */
function parseStatements(text) {
  const statements = {};
  let name = null;
  let lines = [];
  const flush = () => {
    if (name === null) return;
    // comment lines right below the name line document the statement
    while (lines.length && /^\s*(--.*)?$/.test(lines[0])) lines.shift();
    statements[name] = lines.join('\n').trim();
  };
  for (const line of text.split('\n')) {
    const m = /^-- name: ([a-z_][a-z0-9_]*)\s*$/.exec(line);
    if (m) {
      flush();
      name = m[1];
      lines = [];
    } else if (name !== null) {
      lines.push(line);
    }
  }
  flush();
  return statements;
}

const statements = parseStatements(fs.readFileSync(SQL_FILE, 'utf8'));

module.exports = {
  SQL_FILE,
  parseStatements,
  statements,
  /** $1 thermos_job_id, $2 job_class, $3 org_id, $4 project_id (NULL for an org job), $5 job_type */
  UPSERT_JOB: statements.upsert_job,
  /** $1 job_id, $2 org_id, $3 project_id (NULL for an org job) */
  JOB_BY_ID: statements.job_by_id,
  /** $1 org_id, $2 project_id, $3 include_project_jobs, $4 job_type, $5 starting_after (a job_id), $6 page_size */
  LIST_JOBS: statements.list_jobs,
};
