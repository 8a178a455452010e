//! apollo_jobs: branded batch-revoke job ids, dedup on the Thermos workflow id,
//! and tenant-scoped reads, as a PostgreSQL extension.
//!
//! This file is the index of the SQL surface: each function's exact SQL
//! declaration sits directly above its entry point (parameter names are
//! part of the contract, since callers use named notation, and several
//! types are the extension's own domains), and the work is in the modules.
//! Every function is SECURITY INVOKER; the ones that run SQL schema-qualify
//! every name and operator, and `create_jobs_table` and `bind_scopes` also
//! pin `search_path`, so nothing depends on the caller's search_path.
//! Text arguments arrive as raw bytes and are checked as UTF-8 (`text.rs`),
//! so no input can trip a UTF-8 assumption into an internal error.

use pgrx::prelude::*;

mod args;
mod compat;
mod ddl;
mod error;
mod guc;
mod id;
mod oids;
mod probe;
mod reads;
mod scopes;
mod spiplan;
mod srf;
mod store;
mod subxact;
mod text;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use error::{JobError, OrRaise};

::pgrx::pg_module_magic!(name, version);

/// Registers `apollo_jobs.enable_probe` and switches Rust backtraces off.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
}

extension_sql!(
    r#"
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'feature_not_supported',
            MESSAGE = pg_catalog.format('apollo_jobs requires a database with encoding UTF8, not %s',
                                        pg_catalog.getdatabaseencoding()),
            HINT = 'Create the database with ENCODING ''UTF8'' (and TEMPLATE template0).';
    END IF;
END
$$;
"#,
    name = "require_utf8",
    bootstrap,
);

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

extension_sql!(
    r#"
CREATE FUNCTION apollo_jobs.scopes_changed() RETURNS trigger
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', 'scopes_changed_wrapper';
COMMENT ON FUNCTION apollo_jobs.scopes_changed() IS 'statement trigger of apollo_jobs.scopes: every backend rebuilds its read statements';

CREATE TABLE apollo_jobs.scopes (
    scope          pg_catalog.text PRIMARY KEY CHECK (scope OPERATOR(pg_catalog.=) ANY (ARRAY['org', 'project'])),
    relation       pg_catalog.regclass NOT NULL,
    key_column     pg_catalog.name NOT NULL,
    deleted_column pg_catalog.name
);
COMMENT ON TABLE apollo_jobs.scopes IS 'the host tables jobs are scoped to, and their soft-delete columns; written by apollo_jobs.bind_scopes()';
SELECT pg_catalog.pg_extension_config_dump('apollo_jobs.scopes', '');
GRANT SELECT ON apollo_jobs.scopes TO PUBLIC;
CREATE TRIGGER scopes_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apollo_jobs.scopes
    FOR EACH STATEMENT EXECUTE FUNCTION apollo_jobs.scopes_changed();

CREATE FUNCTION apollo_jobs.jobs_refuse_update() RETURNS trigger
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    LANGUAGE c AS 'MODULE_PATHNAME', 'jobs_refuse_update_wrapper';
COMMENT ON FUNCTION apollo_jobs.jobs_refuse_update() IS 'statement trigger jobs_immutable of apollo_jobs.jobs: registrations are never updated';
"#,
    name = "scopes_table",
);

srf::finfo_v1!(pg_finfo_jobs_refuse_update_wrapper);

/// Trigger `jobs_immutable` (BEFORE UPDATE, for each statement): refuses
/// every UPDATE of `apollo_jobs.jobs` with 0A000, whoever runs it.
///
/// # Safety
/// Called by PostgreSQL's trigger manager only.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn jobs_refuse_update_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is this call's.
    unsafe { srf::trigger_data(fcinfo) }.or_raise();
    JobError::Immutable.raise()
}

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
    let class = args::job_class(text::utf8("job_class", job_class).or_raise()).or_raise();
    store::mint(class).or_raise()
}

/// Binds the host tables jobs are scoped to: which table and key column
/// hold the orgs and projects, and which column marks one soft-deleted.
#[pg_extern(
    volatile,
    sql = r#"
CREATE FUNCTION apollo_jobs.bind_scopes(
    orgs pg_catalog.regclass,
    org_key pg_catalog.name DEFAULT 'nano_id',
    org_deleted pg_catalog.name DEFAULT 'deleted',
    projects pg_catalog.regclass DEFAULT NULL,
    project_key pg_catalog.name DEFAULT 'nano_id',
    project_deleted pg_catalog.name DEFAULT 'deleted'
) RETURNS pg_catalog.void
    VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    LANGUAGE c AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION apollo_jobs.bind_scopes(pg_catalog.regclass, pg_catalog.name, pg_catalog.name, pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS 'binds (or rebinds) the host orgs/projects tables, key columns and soft-delete columns that job_by_id and list_jobs filter by';
"#,
    requires = ["scopes_table"]
)]
fn bind_scopes(
    orgs: Option<pg_sys::Oid>,
    org_key: Option<&core::ffi::CStr>,
    org_deleted: Option<&core::ffi::CStr>,
    projects: Option<pg_sys::Oid>,
    project_key: Option<&core::ffi::CStr>,
    project_deleted: Option<&core::ffi::CStr>,
) {
    scopes::bind(&[
        scopes::Request {
            scope: "org",
            relation: orgs,
            key: org_key,
            key_arg: "org_key",
            deleted: org_deleted,
        },
        scopes::Request {
            scope: "project",
            relation: projects,
            key: project_key,
            key_arg: "project_key",
            deleted: project_deleted,
        },
    ])
    .or_raise()
}

/// Creates `apollo_jobs.jobs`, its FKs to the host's orgs/projects, and
/// binds them as the jobs' scopes (`bind_scopes`).
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
COMMENT ON FUNCTION apollo_jobs.create_jobs_table(pg_catalog.regclass, pg_catalog.name, pg_catalog.regclass, pg_catalog.name, pg_catalog.name) IS 'creates apollo_jobs.jobs with FKs to the host orgs/projects tables and binds them (with their soft-delete column) as the jobs'' scopes';
"#,
    requires = ["job_id_domains", job_class_of, "scopes_table", bind_scopes]
)]
fn create_jobs_table(
    orgs: Option<pg_sys::Oid>,
    org_key: Option<&core::ffi::CStr>,
    projects: Option<pg_sys::Oid>,
    project_key: Option<&core::ffi::CStr>,
    deleted_column: Option<&core::ffi::CStr>,
) {
    ddl::create_jobs_table(
        scopes::Request {
            scope: "org",
            relation: orgs,
            key: org_key,
            key_arg: "org_key",
            deleted: deleted_column,
        },
        scopes::Request {
            scope: "project",
            relation: projects,
            key: project_key,
            key_arg: "project_key",
            deleted: deleted_column,
        },
    )
    .or_raise()
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
"#,
    name = "upsert_function",
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
    // SAFETY: fcinfo is this call's; only indices of text arguments are passed.
    let arg = |name, n| unsafe { text::arg(fcinfo, name, n) }.or_raise();
    let registration = args::registration(
        arg("thermos_job_id", 0),
        arg("job_class", 1),
        arg("org_id", 2),
        arg("project_id", 3),
        arg("job_type", 4),
    )
    .or_raise();
    let (job_id, created) = store::upsert(&registration).or_raise();
    // The id's bytes as a text datum (bytea and text share the varlena form).
    rows.put(&[job_id.as_slice().into_datum(), created.into_datum()])
        .or_raise();
    srf::done()
}

extension_sql!(
    r#"
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
COMMENT ON FUNCTION apollo_jobs.job_by_id(pg_catalog.text, pg_catalog.text, pg_catalog.text) IS 'the job if it belongs to (org_id, project_id) and its org and project are visible and not soft-deleted; otherwise no row';
"#,
    name = "getter_function",
    requires = ["job_id_domains"],
);

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
    // SAFETY: fcinfo is this call's; only indices of text arguments are passed.
    let arg = |name, n| unsafe { text::arg(fcinfo, name, n) }.or_raise();
    let required = |name, n| arg(name, n).ok_or(JobError::NullArgument(name)).or_raise();
    let job_id = required("job_id", 0);
    let org_id = required("org_id", 1);
    let project_id = arg("project_id", 2);
    reads::job_by_id(job_id, org_id, project_id, &rows).or_raise();
    srf::done()
}

extension_sql!(
    r#"
CREATE FUNCTION apollo_jobs.list_jobs(
    org_id pg_catalog.text,
    project_id pg_catalog.text DEFAULT NULL,
    include_project_jobs pg_catalog.bool DEFAULT false,
    job_type pg_catalog.text DEFAULT NULL,
    starting_after pg_catalog.text DEFAULT NULL,
    page_size pg_catalog.int4 DEFAULT 50
) RETURNS TABLE (
    job_id apollo_jobs.job_id,
    job_class pg_catalog.text,
    org_id pg_catalog.text,
    project_id pg_catalog.text,
    job_type pg_catalog.text,
    thermos_job_id pg_catalog.text,
    created_at pg_catalog.timestamptz
)
    STABLE PARALLEL RESTRICTED SECURITY INVOKER ROWS 50
    LANGUAGE c AS 'MODULE_PATHNAME', 'list_jobs_wrapper';
COMMENT ON FUNCTION apollo_jobs.list_jobs(pg_catalog.text, pg_catalog.text, pg_catalog.bool, pg_catalog.text, pg_catalog.text, pg_catalog.int4) IS 'one page of a scope''s visible jobs, newest first (created_at DESC, job_id DESC); starting_after is the job_id of the previous page''s last row';
"#,
    name = "listing_function",
    requires = ["job_id_domains"],
);

srf::finfo_v1!(pg_finfo_list_jobs_wrapper);

/// One page of a scope's visible jobs, newest first.
///
/// # Safety
/// Called by PostgreSQL's function manager only.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn list_jobs_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is this call's.
    let rows = unsafe { srf::Rows::begin(fcinfo) };
    // SAFETY: fcinfo is this call's; only indices of text arguments are passed.
    let arg = |name, n| unsafe { text::arg(fcinfo, name, n) }.or_raise();
    // SAFETY: arguments 2 and 5 are boolean and integer, by the declaration.
    let (include, page_size) = unsafe {
        (
            pgrx::fcinfo::pg_getarg::<bool>(fcinfo, 2),
            pgrx::fcinfo::pg_getarg::<i32>(fcinfo, 5),
        )
    };
    let request = reads::ListRequest {
        org_id: arg("org_id", 0),
        project_id: arg("project_id", 1),
        include_project_jobs: include,
        job_type: arg("job_type", 3),
        starting_after: arg("starting_after", 4),
        page_size,
    };
    reads::list_jobs(&request, &rows).or_raise();
    srf::done()
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
