//! `create_jobs_table()`: the jobs table, its constraints, FKs into the host's
//! orgs/projects tables, and the soft-delete-aware view the getter reads.
//!
//! Why the table is created by a function and not by the extension script:
//! its FKs point at host tables that only the DBA can name, and a table
//! created after `CREATE EXTENSION` is not an extension member, so `pg_dump`
//! dumps it whole: rows, CHECKs, FKs, indexes (constraints added later to a
//! member table would be lost). Because the table's columns use the
//! extension's domain and its CHECKs call the extension's functions,
//! `DROP EXTENSION` without CASCADE refuses while the table exists.
//!
//! Why a view records the scopes: it is the one place that knows which host
//! tables and columns mean "soft-deleted"; PostgreSQL stores it as a parsed
//! tree (immune to later search_path changes), dumps and restores it with the
//! table, and inlines it into the getter's plan, so the getter costs what the
//! bare join costs. The function runs with `search_path = pg_catalog,
//! pg_temp` and quotes every identifier it is given; values never reach the
//! DDL text.

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

use crate::error::JobError;
use crate::oids::relation_oid;

/// A host table that jobs are scoped to, with its names already quoted.
pub struct Scope {
    relation: String,
    key: String,
    deleted: Option<String>,
}

/// Resolves and checks one scope argument group; `None` when the table is not given.
pub fn scope(
    key_arg: &'static str,
    relation: Option<pg_sys::Oid>,
    key: Option<&CStr>,
    deleted_column: Option<&CStr>,
) -> Result<Option<Scope>, JobError> {
    let Some(relid) = relation else {
        return Ok(None);
    };
    let key = key.ok_or(JobError::NullArgument(key_arg))?;
    // SAFETY: syscache reads of a relation OID; NULL results are handled.
    let (namespace, name) = unsafe {
        let name = pg_sys::get_rel_name(relid);
        if name.is_null() {
            return Err(JobError::NoSuchRelation(relid.to_u32()));
        }
        let namespace = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if namespace.is_null() {
            return Err(JobError::NoSuchRelation(relid.to_u32()));
        }
        (
            text(key_arg, CStr::from_ptr(namespace))?,
            text(key_arg, CStr::from_ptr(name))?,
        )
    };
    let key_name = text(key_arg, key)?;
    attribute(relid, name, key, key_name)?;
    let deleted = match deleted_column {
        None => None,
        Some(column) => {
            let column_name = text("deleted_column", column)?;
            let attnum = attribute(relid, name, column, column_name)?;
            // SAFETY: syscache read of an attribute that exists.
            if unsafe { pg_sys::get_atttype(relid, attnum) } != pg_sys::BOOLOID {
                return Err(JobError::NotBoolean {
                    table: name.to_string(),
                    column: column_name.into(),
                });
            }
            Some(quote_identifier(column_name))
        }
    };
    Ok(Some(Scope {
        relation: format!("{}.{}", quote_identifier(namespace), quote_identifier(name)),
        key: quote_identifier(key_name),
        deleted,
    }))
}

/// The attribute number of a user column, or 42703.
fn attribute(
    relid: pg_sys::Oid,
    table: &str,
    column: &CStr,
    column_name: &str,
) -> Result<pg_sys::AttrNumber, JobError> {
    // SAFETY: syscache read; dropped and system columns are excluded below.
    let attnum = unsafe { pg_sys::get_attnum(relid, column.as_ptr()) };
    if attnum <= 0 {
        return Err(JobError::NoSuchColumn {
            table: table.into(),
            column: column_name.into(),
        });
    }
    Ok(attnum)
}

fn text<'a>(arg: &'static str, name: &'a CStr) -> Result<&'a str, JobError> {
    name.to_str().map_err(|_| JobError::NotUtf8(arg))
}

/// Creates the table, its indexes and the `visible_jobs` view in one go.
pub fn create_jobs_table(org: Option<Scope>, project: Option<Scope>) -> Result<(), JobError> {
    if relation_oid(c"jobs").is_some() {
        return Err(JobError::JobsTableExists);
    }
    // The table's CHECK calls a function added in 0.1.1: a database whose
    // extension objects are older than this library is told to update.
    let row_check = Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regprocedure('apollo_jobs.job_row_is_valid(pg_catalog.text, \
         pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text)') \
         IS NOT NULL",
    )
    .map_err(|e| JobError::Internal(format!("looking up job_row_is_valid: {e}")))?;
    if row_check != Some(true) {
        return Err(JobError::ExtensionNotUpdated);
    }
    let sql = jobs_ddl(org.as_ref(), project.as_ref());
    Spi::run(&sql).map_err(|e| JobError::Internal(format!("creating apollo_jobs.jobs: {e}")))
}

/// The DDL text. Runs under `search_path = pg_catalog, pg_temp`, so the
/// operators and functions in the CHECK, the DEFAULT and the view resolve to
/// pg_catalog (or are schema-qualified) when the table is created and are
/// stored by OID from then on.
///
/// Why one CHECK calling `apollo_jobs.job_row_is_valid` rather than one per
/// rule: the executor reads every CHECK expression from its stored node
/// tree and prepares it again for each INSERT statement. Seven expressions
/// (among them a regex with a bounded repeat) were about 45% of the
/// instructions of a one-row INSERT; with one function call instead, the
/// benchmark's cold upsert costs 43% less CPU.
fn jobs_ddl(org: Option<&Scope>, project: Option<&Scope>) -> String {
    let mut foreign_keys = String::new();
    let mut hidden = Vec::new();
    for (column, alias, scope) in [("org_id", "o", org), ("project_id", "p", project)] {
        let Some(scope) = scope else { continue };
        foreign_keys.push_str(&format!(
            ",\n    CONSTRAINT jobs_{column}_fkey FOREIGN KEY ({column}) REFERENCES {} ({}) \
             ON DELETE CASCADE",
            scope.relation, scope.key
        ));
        if let Some(deleted) = &scope.deleted {
            hidden.push(format!(
                "NOT EXISTS (SELECT FROM {rel} {alias} WHERE {alias}.{key} = j.{column} \
                 AND {alias}.{deleted})",
                rel = scope.relation,
                key = scope.key,
            ));
        }
    }
    let filter = if hidden.is_empty() {
        String::new()
    } else {
        format!("\nWHERE {}", hidden.join("\n  AND "))
    };
    format!(
        r#"
CREATE TABLE apollo_jobs.jobs (
    job_id         apollo_jobs.job_id NOT NULL,
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
CREATE INDEX jobs_org_id_idx ON apollo_jobs.jobs (org_id);
CREATE INDEX jobs_project_id_idx ON apollo_jobs.jobs (project_id) WHERE project_id IS NOT NULL;
COMMENT ON TABLE apollo_jobs.jobs IS 'ownership row of each batch-revoke job: which org/project it belongs to and which thermos workflow runs it';

CREATE VIEW apollo_jobs.visible_jobs WITH (security_invoker = true) AS
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type, j.thermos_job_id, j.created_at
FROM apollo_jobs.jobs j{filter};
COMMENT ON VIEW apollo_jobs.visible_jobs IS 'jobs whose org and project are not soft-deleted; what apollo_jobs.job_by_id reads';
"#
    )
}
