//! apollo_jobs: branded batch-revoke job ids, dedup on the Thermos workflow id,
//! and tenant-scoped reads, as a PostgreSQL extension.
//!
//! This file is the index of the SQL surface. Each function's exact SQL
//! declaration sits beside it (parameter names are part of the contract,
//! since callers use named notation, and several types are the extension's
//! own domains). Every function is SECURITY INVOKER; the ones that run SQL
//! schema-qualify every name and operator, and `create_jobs_table` also pins
//! `search_path`, so nothing depends on the caller's search_path.
//! Text arguments arrive as raw bytes and are checked here, so no input can
//! trip a UTF-8 assumption into an internal error.

use pgrx::prelude::*;

mod args;
mod ddl;
mod error;
mod id;
mod oids;
mod probe;
mod srf;
mod store;
mod text;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use error::{JobError, OrRaise};

::pgrx::pg_module_magic!(name, version);

extension_sql!(
    r#"
COMMENT ON SCHEMA apollo_jobs IS 'batch-revoke job ownership: branded ids, dedup on the thermos workflow id, tenant-scoped reads';

CREATE DOMAIN apollo_jobs.job_id AS pg_catalog.text
    CONSTRAINT job_id_check CHECK (apollo_jobs.job_id_is_valid(VALUE));
COMMENT ON DOMAIN apollo_jobs.job_id IS 'a job id: oj_ or pj_ followed by 21 symbols of [0-9A-Za-z]';

CREATE DOMAIN apollo_jobs.org_job_id AS apollo_jobs.job_id
    CONSTRAINT org_job_id_check CHECK (pg_catalog.starts_with(VALUE::pg_catalog.text, 'oj_'));
COMMENT ON DOMAIN apollo_jobs.org_job_id IS 'a job id of an org-scoped job (prefix oj_)';

CREATE DOMAIN apollo_jobs.project_job_id AS apollo_jobs.job_id
    CONSTRAINT project_job_id_check CHECK (pg_catalog.starts_with(VALUE::pg_catalog.text, 'pj_'));
COMMENT ON DOMAIN apollo_jobs.project_job_id IS 'a job id of a project-scoped job (prefix pj_)';
"#,
    name = "job_id_domains",
    requires = [job_id_is_valid],
);

/// True iff `candidate` is a well-formed job id. Never raises.
#[pg_extern(
    immutable,
    strict,
    parallel_safe,
    sql = r#"
CREATE FUNCTION apollo_jobs.job_id_is_valid(candidate pg_catalog.text) RETURNS pg_catalog.bool
    IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION apollo_jobs.job_id_is_valid(pg_catalog.text) IS 'true iff the text is a well-formed job id; never raises';
"#
)]
fn job_id_is_valid(candidate: &[u8]) -> bool {
    id::is_valid(candidate)
}

/// `'org'` or `'project'`, from the id's prefix; 22P02 for a malformed id.
#[pg_extern(
    immutable,
    strict,
    parallel_safe,
    sql = r#"
CREATE FUNCTION apollo_jobs.job_class_of(job_id pg_catalog.text) RETURNS pg_catalog.text
    IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION apollo_jobs.job_class_of(pg_catalog.text) IS 'org or project, from the job id prefix; 22P02 for a malformed id';
"#
)]
fn job_class_of(job_id: &[u8]) -> &'static str {
    match id::class_of(job_id) {
        Some(class) => class.as_str(),
        None => JobError::MalformedJobId(String::from_utf8_lossy(job_id).into_owned()).raise(),
    }
}

/// The row rules of `apollo_jobs.jobs`, which its CHECK `jobs_row_check`
/// calls: the same rules the functions apply to their arguments (see
/// `args.rs`). One call instead of seven CHECK expressions, because the
/// executor reads and prepares every CHECK expression again for each INSERT
/// statement; NULL when a NOT NULL column is NULL (its NOT NULL constraint
/// reports it).
#[pg_extern(
    immutable,
    parallel_safe,
    sql = r#"
CREATE FUNCTION apollo_jobs.job_row_is_valid(
    job_id pg_catalog.text,
    job_class pg_catalog.text,
    org_id pg_catalog.text,
    project_id pg_catalog.text,
    job_type pg_catalog.text,
    thermos_job_id pg_catalog.text
) RETURNS pg_catalog.bool
    IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION apollo_jobs.job_row_is_valid(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text) IS 'the row rules of apollo_jobs.jobs (CHECK jobs_row_check); never raises';
"#
)]
fn job_row_is_valid(
    job_id: Option<&[u8]>,
    job_class: Option<&[u8]>,
    org_id: Option<&[u8]>,
    project_id: Option<&[u8]>,
    job_type: Option<&[u8]>,
    thermos_job_id: Option<&[u8]>,
) -> Option<bool> {
    Some(args::row_is_valid(
        job_id?,
        job_class?,
        org_id?,
        project_id,
        job_type?,
        thermos_job_id?,
    ))
}

/// A fresh id of the class: `oj_…` for `'org'`, `pj_…` for `'project'`.
#[pg_extern(
    volatile,
    parallel_safe,
    sql = r#"
CREATE FUNCTION apollo_jobs.mint_job_id(job_class pg_catalog.text) RETURNS apollo_jobs.job_id
    VOLATILE PARALLEL SAFE SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION apollo_jobs.mint_job_id(pg_catalog.text) IS 'a fresh job id of the class (org or project) from a CSPRNG';
"#,
    requires = ["job_id_domains"]
)]
fn mint_job_id(job_class: Option<&[u8]>) -> String {
    let class = args::job_class(utf8("job_class", job_class).or_raise()).or_raise();
    store::mint(class).or_raise()
}

/// Creates `apollo_jobs.jobs`, its FKs to the host's orgs/projects and the
/// soft-delete-aware view the getter reads.
#[pg_extern(
    volatile,
    sql = r#"
CREATE FUNCTION apollo_jobs.create_jobs_table(
    orgs pg_catalog.regclass DEFAULT NULL,
    org_key pg_catalog.name DEFAULT 'nano_id',
    projects pg_catalog.regclass DEFAULT NULL,
    project_key pg_catalog.name DEFAULT 'nano_id',
    deleted_column pg_catalog.name DEFAULT 'deleted'
) RETURNS pg_catalog.void
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    LANGUAGE c AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION apollo_jobs.create_jobs_table(pg_catalog.regclass, pg_catalog.name, pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS 'creates apollo_jobs.jobs with FKs to the host orgs/projects tables and the soft-delete-aware view apollo_jobs.visible_jobs';
"#,
    requires = ["job_id_domains", job_class_of]
)]
fn create_jobs_table(
    orgs: Option<pg_sys::Oid>,
    org_key: Option<&core::ffi::CStr>,
    projects: Option<pg_sys::Oid>,
    project_key: Option<&core::ffi::CStr>,
    deleted_column: Option<&core::ffi::CStr>,
) {
    let org = ddl::scope("org_key", orgs, org_key, deleted_column).or_raise();
    let project = ddl::scope("project_key", projects, project_key, deleted_column).or_raise();
    ddl::create_jobs_table(org, project).or_raise()
}

extension_sql!(
    r#"
CREATE FUNCTION apollo_jobs.upsert_job_by_thermos_id(
    thermos_job_id pg_catalog.text,
    job_class pg_catalog.text,
    org_id pg_catalog.text,
    project_id pg_catalog.text,
    job_type pg_catalog.text
) RETURNS TABLE (job_id apollo_jobs.job_id, created pg_catalog.bool)
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 1
    LANGUAGE c AS 'MODULE_PATHNAME', 'upsert_job_by_thermos_id_wrapper';
COMMENT ON FUNCTION apollo_jobs.upsert_job_by_thermos_id(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text) IS 'get-or-create the job registered under a thermos workflow id: (existing id, false) or (new id, true)';

CREATE FUNCTION apollo_jobs.job_by_id(
    job_id pg_catalog.text,
    org_id pg_catalog.text,
    project_id pg_catalog.text DEFAULT NULL
) RETURNS TABLE (
    job_id apollo_jobs.job_id,
    job_class pg_catalog.text,
    org_id pg_catalog.text,
    project_id pg_catalog.text,
    job_type pg_catalog.text,
    thermos_job_id pg_catalog.text,
    created_at pg_catalog.timestamptz
)
    STABLE PARALLEL RESTRICTED SECURITY INVOKER ROWS 1
    LANGUAGE c AS 'MODULE_PATHNAME', 'job_by_id_wrapper';
COMMENT ON FUNCTION apollo_jobs.job_by_id(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS 'the job if it belongs to (org_id, project_id) and neither scope is soft-deleted; otherwise no row';
"#,
    name = "row_functions",
    requires = ["job_id_domains"],
);

srf::finfo_v1!(pg_finfo_upsert_job_by_thermos_id_wrapper);

/// Lookup-first get-or-create on the thermos workflow id; always one row.
///
/// # Safety
/// Called by PostgreSQL's function manager only.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn upsert_job_by_thermos_id_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is this call's.
    let rows = unsafe { srf::Rows::begin(fcinfo) };
    let arg = |name, n| unsafe { text_arg(fcinfo, name, n) }.or_raise();
    let registration = args::registration(
        arg("thermos_job_id", 0),
        arg("job_class", 1),
        arg("org_id", 2),
        arg("project_id", 3),
        arg("job_type", 4),
    )
    .or_raise();
    let (job_id, created) = store::upsert(&registration).or_raise();
    rows.put(&[job_id.into_datum(), created.into_datum()])
        .or_raise();
    srf::done()
}

srf::finfo_v1!(pg_finfo_job_by_id_wrapper);

/// The job, only if it belongs to (org_id, project_id) and neither scope is
/// soft-deleted; zero rows otherwise (including for a malformed job id).
///
/// # Safety
/// Called by PostgreSQL's function manager only.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn job_by_id_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is this call's.
    let rows = unsafe { srf::Rows::begin(fcinfo) };
    let arg = |name, n| unsafe { text_arg(fcinfo, name, n) }.or_raise();
    let required = |name, n| arg(name, n).ok_or(JobError::NullArgument(name)).or_raise();
    let job_id = required("job_id", 0);
    let org_id = required("org_id", 1);
    let project_id = arg("project_id", 2);
    store::job_by_id(job_id, org_id, project_id, &rows).or_raise();
    srf::done()
}

/// Text argument bytes as UTF-8. In a UTF-8 database this never fails; in
/// another encoding, non-UTF-8 bytes are a 22021, not an internal error.
fn utf8<'a>(arg: &'static str, bytes: Option<&'a [u8]>) -> Result<Option<&'a str>, JobError> {
    bytes
        .map(|b| std::str::from_utf8(b).map_err(|_| JobError::NotUtf8(arg)))
        .transpose()
}

/// Text argument `n` of a hand-declared function, as UTF-8 (`name` is for
/// the error message).
///
/// # Safety
/// `fcinfo` must be the current call's, and argument `n` of type text.
unsafe fn text_arg<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    name: &'static str,
    n: usize,
) -> Result<Option<&'a str>, JobError> {
    // SAFETY: per this function's contract; a text datum is read as its bytes.
    utf8(name, unsafe {
        pgrx::fcinfo::pg_getarg_datum(fcinfo, n).map(|datum| text::bytes(datum))
    })
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
