//! `create_jobs_table()`: the jobs table, its constraints, its FKs into the
//! host's orgs/projects tables, and the scope bindings the reads filter by.
//!
//! Why the table is created by a function and not by the extension script:
//! its FKs point at host tables that only the DBA can name, and a table
//! created after `CREATE EXTENSION` is not an extension member, so `pg_dump`
//! dumps it whole: rows, CHECK, FKs, indexes, trigger (constraints added
//! later to a member table would be lost).
//!
//! Why `job_id` is a plain text column: a column of the extension's domain
//! would be dropped by `DROP EXTENSION apollo_jobs CASCADE` (PostgreSQL's own
//! hint), losing every job id. The CHECK `jobs_row_check` enforces the id
//! grammar instead; the functions still return the `job_id` domain. So the
//! only objects of the table that depend on the extension are that CHECK
//! and the immutability trigger: `DROP EXTENSION` refuses without CASCADE
//! (2BP01), and with CASCADE leaves a complete table of rows and ids.
//!
//! The function runs with `search_path = pg_catalog, pg_temp` and quotes
//! every identifier it is given; values never reach the DDL text.

use pgrx::prelude::*;

use crate::error::JobError;
use crate::oids::relation_oid;
use crate::scopes::{self, Request};

/// Creates the table and its indexes, then binds the scopes.
pub fn create_jobs_table(org: Request<'_>, project: Request<'_>) -> Result<(), JobError> {
    crate::store::require_writable("create apollo_jobs.jobs")?;
    if relation_oid(c"jobs").is_some() {
        return Err(JobError::JobsTableExists);
    }
    // The library is newer than the extension's SQL objects until
    // ALTER EXTENSION UPDATE runs; the table needs the current ones.
    if relation_oid(c"scopes").is_none() {
        return Err(JobError::ExtensionNotUpdated);
    }
    let mut foreign_keys = String::new();
    for (column, request) in [("org_id", &org), ("project_id", &project)] {
        let Some(relid) = request.relation else {
            continue;
        };
        let key = request.key.ok_or(JobError::NullArgument(request.key_arg))?;
        let key = key
            .to_str()
            .map_err(|_| JobError::NotUtf8(request.key_arg))?;
        let deleted = request
            .deleted
            .map(|d| d.to_str().map_err(|_| JobError::NotUtf8("deleted_column")))
            .transpose()?;
        let binding = scopes::resolve(request.scope, relid, key, deleted)?;
        foreign_keys.push_str(&format!(
            ",\n    CONSTRAINT jobs_{column}_fkey FOREIGN KEY ({column}) REFERENCES {} ({}) \
             ON DELETE CASCADE",
            binding.sql_relation(),
            binding.sql_key()
        ));
    }
    Spi::run(&jobs_ddl(&foreign_keys))
        .map_err(|e| JobError::Internal(format!("creating apollo_jobs.jobs: {e}")))?;
    scopes::bind(&[org, project])
}

/// The DDL text. Runs under `search_path = pg_catalog, pg_temp`, so the
/// operators and functions in the CHECK and the DEFAULT resolve to
/// pg_catalog (or are schema-qualified) when the table is created and are
/// stored by OID from then on.
///
/// Why one CHECK calling `apollo_jobs.job_row_is_valid` rather than one per
/// rule: the executor prepares every CHECK expression again for each INSERT
/// statement; one function call costs far less than seven expressions.
///
/// Why the listing indexes lead with the scope column: they serve the
/// cascades from the host tables (`DELETE … WHERE org_id = $1`) and the
/// keyset pages of `list_jobs` (newest first) with one index each.
fn jobs_ddl(foreign_keys: &str) -> String {
    format!(
        r#"
CREATE TABLE apollo_jobs.jobs (
    job_id         text NOT NULL,
    job_class      text NOT NULL,
    org_id         text NOT NULL,
    project_id     text,
    job_type       text NOT NULL,
    thermos_job_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_pkey PRIMARY KEY (job_id),
    CONSTRAINT jobs_thermos_job_id_key UNIQUE (thermos_job_id),
    CONSTRAINT jobs_row_check CHECK (apollo_jobs.job_row_is_valid(job_id, job_class, org_id, project_id, job_type, thermos_job_id)){foreign_keys}
);
{indexes}
CREATE TRIGGER jobs_immutable BEFORE UPDATE ON apollo_jobs.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION apollo_jobs.jobs_refuse_update();
COMMENT ON TABLE apollo_jobs.jobs IS 'ownership row of each batch-revoke job: which org/project it belongs to and which thermos workflow runs it';
"#,
        indexes = LISTING_INDEXES
    )
}

/// The listing indexes. The 0.2.0 upgrade script builds the same two (or
/// adopts copies built `CONCURRENTLY` beforehand); the upgrade stage checks
/// that both end up alike.
const LISTING_INDEXES: &str = "\
CREATE INDEX jobs_org_listing_idx ON apollo_jobs.jobs (org_id, created_at DESC, job_id DESC);
CREATE INDEX jobs_project_listing_idx ON apollo_jobs.jobs (project_id, created_at DESC, job_id DESC) WHERE project_id IS NOT NULL;";
