//! The tenant-scoped reads: `job_by_id` and `list_jobs`.
//!
//! Why statements built per backend: their visibility filter names the host
//! tables bound in `apollo_jobs.scopes` (see `scopes.rs`), so each statement
//! is built from the bindings, prepared, kept, and built again when the jobs
//! table is replaced or the bindings (or a bound table) change.
//!
//! Why the listing statements are planned with `enable_sort = off` and
//! `enable_seqscan = off` (`LISTING_SETTINGS`, applied while they are
//! planned: `spiplan::KeptPlan`): a page must be the listing index's
//! own order, stopped after `page_size` rows, with every scope row found
//! through its key. The planner underestimates how many of a project's jobs
//! pass the (correlated) org and visibility filters; for a handful of
//! estimated rows a bitmap scan plus a sort, a hashed scope subquery over the
//! whole host table, or a sequential scan of the host table look cheapest —
//! at a million jobs per project each costs milliseconds per page. With
//! those priced out, the one plan left is the keyset range scan; kept as a
//! generic plan (`spiplan.rs`), it is not re-planned for every page either.
//!
//! Why one statement per listing shape: a keyset page must be an index range
//! scan on `(org_id|project_id, created_at DESC, job_id DESC)` that stops
//! after `page_size` rows. A single statement with `$n IS NULL OR …` branches
//! would leave the generic plan unable to use the cursor as an index bound,
//! so the scope (project / org's own jobs / org with its projects) and the
//! presence of a cursor each select their own statement; so does a
//! `job_type` filter, which is then a plain condition rather than a
//! `$3 IS NULL OR …` every row of every page evaluates.
//!
//! Why the cursor is resolved in the same scope and under the same
//! visibility filter as the page: a cursor that is not a job of this
//! listing — malformed, unknown, another tenant's, soft-deleted — gets one
//! and the same 22023, so it never tells anything about data the caller
//! cannot list. The page statement looks the cursor up itself; only an
//! empty page runs the cursor statement to tell "the end" from "not a
//! cursor of this listing".

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::prelude::*;

use crate::args;
use crate::error::JobError;
use crate::id;
use crate::oids;
use crate::scopes::{self, Binding};
use crate::spiplan::{KeptPlan, Settings};
use crate::srf::Rows;

const COLUMNS: &str = "j.job_id::pg_catalog.text, j.job_class::pg_catalog.text, \
    j.org_id::pg_catalog.text, j.project_id::pg_catalog.text, j.job_type::pg_catalog.text, \
    j.thermos_job_id::pg_catalog.text, j.created_at::pg_catalog.timestamptz";

/// Largest page `list_jobs` returns.
pub const PAGE_MAX: i32 = 1000;

/// Which jobs a listing covers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Scope {
    /// One project's jobs (of the given org).
    Project,
    /// The org's own (org-class) jobs.
    Org,
    /// The org's own jobs and those of its visible projects.
    OrgWithProjects,
}

impl Scope {
    fn predicate(self) -> &'static str {
        match self {
            // The org condition is wrapped in IS TRUE so that it stays a
            // filter: combined with the org index (a BitmapAnd) it would
            // lose the project index's order and sort the whole project.
            Scope::Project => {
                "j.project_id OPERATOR(pg_catalog.=) $2 AND (j.org_id OPERATOR(pg_catalog.=) $1) IS TRUE"
            }
            Scope::Org => "j.org_id OPERATOR(pg_catalog.=) $1 AND j.project_id IS NULL",
            Scope::OrgWithProjects => "j.org_id OPERATOR(pg_catalog.=) $1",
        }
    }
}

/// The statements, by what they do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Statement {
    Getter,
    /// The cursor's (created_at, job_id), if it is a job of the listing.
    Cursor(Scope),
    /// A page: first (no cursor) or after a cursor; of one job type or all.
    Page(Scope, Page),
}

/// What selects a page statement beside its scope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Page {
    /// After a cursor (`starting_after`), or the first page.
    after: bool,
    /// Filtered by `job_type`, rather than every row testing a NULL filter.
    typed: bool,
}

/// The listing's planner settings: see the module comment.
const LISTING_SETTINGS: Settings = &[(c"enable_sort", c"off"), (c"enable_seqscan", c"off")];

/// Parameters of every listing statement, in order: org_id, project_id,
/// job_type, cursor created_at, cursor job_id, page size.
const LIST_TYPES: [pg_sys::Oid; 6] = [
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::INT8OID,
];

impl Statement {
    fn sql(self, bindings: &[Binding]) -> String {
        use scopes::Source::{Absent, Param, Row};
        let visibility = match self {
            Statement::Getter => scopes::visibility(bindings, Row, Row),
            Statement::Cursor(scope) | Statement::Page(scope, _) => match scope {
                Scope::Project => scopes::visibility(bindings, Param("$1"), Param("$2")),
                Scope::Org => scopes::visibility(bindings, Param("$1"), Absent),
                Scope::OrgWithProjects => scopes::visibility(bindings, Param("$1"), Row),
            },
        };
        let all = visibility.all();
        match self {
            Statement::Getter => format!(
                "SELECT {COLUMNS} FROM apollo_jobs.jobs j \
                 WHERE j.job_id OPERATOR(pg_catalog.=) $1 AND j.org_id OPERATOR(pg_catalog.=) $2 \
                 AND (j.project_id OPERATOR(pg_catalog.=) $3 OR (j.project_id IS NULL AND $3 IS NULL))\
                 {all}"
            ),
            Statement::Cursor(scope) => format!(
                "SELECT j.created_at::pg_catalog.timestamptz, j.job_id::pg_catalog.text \
                 FROM apollo_jobs.jobs j \
                 WHERE j.job_id OPERATOR(pg_catalog.=) $5 AND {}{all}",
                scope.predicate()
            ),
            // After a cursor, the bound is the cursor job's own created_at,
            // looked up once by the statement itself (an InitPlan) in the
            // listing's scope and visibility: a cursor that is not a job of
            // the listing yields NULL and so no rows, and only an empty page
            // costs the separate Cursor statement that tells the two apart.
            //
            // The checks of the scope rows given as parameters (the gate)
            // make the LIMIT zero when they fail, rather than filter rows:
            // as a WHERE condition they would become a gating Result node,
            // which projects every row into a new tuple, where a Limit over
            // the index scan hands the table's own tuples to the result
            // store (a copy, not a re-formation). Same rows either way.
            Statement::Page(scope, Page { after, typed }) => format!(
                "SELECT {COLUMNS} FROM apollo_jobs.jobs j WHERE {}\
                 {}{}{} \
                 ORDER BY j.created_at DESC, j.job_id DESC LIMIT {}",
                scope.predicate(),
                // The cursor's own lookup leaves the gate to the LIMIT: when
                // the gate fails the page is empty whatever the bound, and
                // the Cursor statement (with the whole visibility) answers.
                if after {
                    format!(
                        " AND (j.created_at, j.job_id) OPERATOR(pg_catalog.<) \
                         ((SELECT j.created_at FROM apollo_jobs.jobs j \
                         WHERE j.job_id OPERATOR(pg_catalog.=) $5 AND {}{}), $5)",
                        scope.predicate(),
                        visibility.per_row
                    )
                } else {
                    String::new()
                },
                if typed {
                    " AND j.job_type OPERATOR(pg_catalog.=) $3"
                } else {
                    ""
                },
                visibility.per_row,
                if visibility.gate.is_empty() {
                    "$6".to_string()
                } else {
                    format!(
                        "CASE WHEN {} THEN $6 ELSE 0 END",
                        visibility.gate.join(" AND ")
                    )
                }
            ),
        }
    }

    /// What the statement is planned with (see `spiplan::KeptPlan`).
    fn settings(self) -> Settings {
        match self {
            Statement::Getter => &[],
            Statement::Cursor(_) | Statement::Page(..) => LISTING_SETTINGS,
        }
    }

    fn types(self) -> &'static [pg_sys::Oid] {
        match self {
            Statement::Getter => &LIST_TYPES[..3],
            Statement::Cursor(_) | Statement::Page(..) => &LIST_TYPES,
        }
    }
}

/// What the statements were built from: the jobs table and the bindings.
struct Prepared {
    key: (pg_sys::Oid, u64),
    bindings: Vec<Binding>,
    plans: HashMap<Statement, Rc<KeptPlan>>,
}

thread_local! {
    static PREPARED: RefCell<Option<Prepared>> = const { RefCell::new(None) };
}

/// The kept plan of `statement`, built now if the table or the bindings
/// changed since it was.
fn plan(statement: Statement) -> Result<Rc<KeptPlan>, JobError> {
    let table = oids::locked_jobs().ok_or(JobError::JobsTableMissing)?;
    // Take in DDL committed since this transaction last looked (locking the
    // jobs table does not if this transaction holds it already), so a
    // binding broken meanwhile is found here and reported as such, before
    // a kept plan is re-parsed against it.
    // SAFETY: processes pending invalidation messages; callbacks only touch thread-locals.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let key = (table, scopes::generation());
    let stale = PREPARED.with(|p| p.borrow().as_ref().is_none_or(|p| p.key != key));
    if stale {
        let bindings: Vec<Binding> = scopes::load()?;
        let mut watched: Vec<pg_sys::Oid> = bindings.iter().map(|b| b.relation).collect();
        watched.extend(oids::relation_oid(c"scopes"));
        scopes::watch(watched);
        // Loading the bindings may itself have processed invalidations.
        let key = (table, scopes::generation());
        PREPARED.with(|p| {
            *p.borrow_mut() = Some(Prepared {
                key,
                bindings,
                plans: HashMap::new(),
            })
        });
    }
    if let Some(found) = PREPARED.with(|p| {
        p.borrow()
            .as_ref()
            .and_then(|p| p.plans.get(&statement).cloned())
    }) {
        return Ok(found);
    }
    let sql = PREPARED.with(|p| {
        p.borrow()
            .as_ref()
            .map(|p| statement.sql(&p.bindings))
            .unwrap_or_default()
    });
    let prepared = Rc::new(KeptPlan::prepare(
        &sql,
        statement.types(),
        statement.settings(),
    )?);
    PREPARED.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            p.plans.insert(statement, Rc::clone(&prepared));
        }
    });
    Ok(prepared)
}

/// The job if it is visible to (org_id, project_id); no row otherwise.
pub fn job_by_id(
    job_id: &str,
    org_id: &str,
    project_id: Option<&str>,
    rows: &Rows,
) -> Result<(), JobError> {
    Spi::connect(|_client| {
        let plan = plan(Statement::Getter)?;
        if !id::is_valid(job_id.as_bytes()) {
            return Ok(());
        }
        let args = [text(Some(job_id)), text(Some(org_id)), text(project_id)];
        plan.run(&args, Some(rows.store()))?;
        Ok(())
    })
}

/// A text parameter.
fn text(value: Option<&str>) -> (pg_sys::Oid, Option<pg_sys::Datum>) {
    (pg_sys::TEXTOID, value.and_then(IntoDatum::into_datum))
}

/// The arguments of `list_jobs`, as SQL passed them.
pub struct ListRequest<'a> {
    pub org_id: Option<&'a str>,
    pub project_id: Option<&'a str>,
    pub include_project_jobs: Option<bool>,
    pub job_type: Option<&'a str>,
    pub starting_after: Option<&'a str>,
    pub page_size: Option<i32>,
}

/// One page of a scope's jobs, newest first.
pub fn list_jobs(request: &ListRequest<'_>, rows: &Rows) -> Result<(), JobError> {
    let org_id = request.org_id.ok_or(JobError::NullArgument("org_id"))?;
    let include = request
        .include_project_jobs
        .ok_or(JobError::NullArgument("include_project_jobs"))?;
    let page_size = request
        .page_size
        .ok_or(JobError::NullArgument("page_size"))?;
    if !(1..=PAGE_MAX).contains(&page_size) {
        return Err(JobError::PageSize(page_size));
    }
    let scope = match (request.project_id, include) {
        (Some(_), true) => return Err(JobError::ProjectJobsWithProject),
        (Some(_), false) => Scope::Project,
        (None, false) => Scope::Org,
        (None, true) => Scope::OrgWithProjects,
    };
    if let Some(job_type) = request.job_type {
        if !args::is_job_type(job_type.as_bytes()) {
            return Err(JobError::InvalidJobType(job_type.to_string()));
        }
    }
    Spi::connect(|_client| {
        let args = [
            text(Some(org_id)),
            text(request.project_id),
            text(request.job_type),
            (pg_sys::TIMESTAMPTZOID, None),
            text(request.starting_after),
            (pg_sys::INT8OID, i64::from(page_size).into_datum()),
        ];
        let after = match request.starting_after {
            None => false,
            Some(cursor) if !id::is_valid(cursor.as_bytes()) => {
                return Err(JobError::InvalidCursor)
            }
            Some(_) => true,
        };
        let page = Page {
            after,
            typed: request.job_type.is_some(),
        };
        let found = plan(Statement::Page(scope, page))?.run(&args, Some(rows.store()))?;
        // An empty page after a cursor: the end of the listing, or a cursor
        // that is not one of its jobs.
        if after && found == 0 && plan(Statement::Cursor(scope))?.run(&args, None)? == 0 {
            return Err(JobError::InvalidCursor);
        }
        Ok(())
    })
}
