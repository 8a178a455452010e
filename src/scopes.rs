//! Scope bindings: which host tables and columns hold the orgs and projects
//! that jobs belong to, and which column marks one soft-deleted.
//!
//! Why data and not a view: 0.1 recorded the bindings in a view over the host
//! tables, which host DDL could silently drop (`DROP COLUMN … CASCADE`) and
//! which blocked host column changes. The bindings are now rows of the
//! extension's configuration table `apollo_jobs.scopes` (dumped with the
//! database), written by `bind_scopes()`, and the read statements are built
//! from them. Nothing depends on the host columns but the FKs, so the host
//! can alter its tables freely; a binding that no longer fits is reported by
//! every read as 55000 naming the fix, never as a missing table.
//!
//! Why the read statements fail closed: a job is visible only if its org row
//! (and, for a project job, its project row) is one the caller can read and
//! is not soft-deleted — a semi-join, so host row-level security that hides
//! a scope hides its jobs too.
//!
//! Why a relcache callback: the statements are built and prepared once per
//! backend. Any change of the bindings (a statement trigger on
//! `apollo_jobs.scopes` broadcasts a relcache invalidation) or DDL on a
//! bound host table (a rename, a dropped column) makes this backend build
//! them again, from the current names, at its next read.

use std::cell::{Cell, RefCell};
use std::ffi::CStr;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

use crate::error::JobError;
use crate::store::spi_failed;

/// How a soft-delete column marks a deleted row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SoftDelete {
    /// boolean: deleted when true, and (fail closed) when null.
    Flag,
    /// timestamp, timestamptz or date: deleted when not null.
    Stamp,
}

/// One validated binding, with its names quoted for SQL.
#[derive(Clone, Debug)]
pub struct Binding {
    pub scope: &'static str,
    pub relation: pg_sys::Oid,
    sql_relation: String,
    key: String,
    deleted: Option<(String, SoftDelete)>,
}

/// What `bind_scopes` was asked to bind for one scope.
pub struct Request<'a> {
    pub scope: &'static str,
    pub relation: Option<pg_sys::Oid>,
    pub key: Option<&'a CStr>,
    pub key_arg: &'static str,
    pub deleted: Option<&'a CStr>,
}

/// Checks one binding against the catalog: the relation exists, the key is
/// a text or varchar column, the soft-delete column (if any) a boolean, a
/// timestamp or a date.
pub fn resolve(
    scope: &'static str,
    relid: pg_sys::Oid,
    key: &str,
    deleted: Option<&str>,
) -> Result<Binding, JobError> {
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
            CStr::from_ptr(namespace).to_string_lossy().into_owned(),
            CStr::from_ptr(name).to_string_lossy().into_owned(),
        )
    };
    let key_type = column_type(relid, &name, key)?;
    if key_type != pg_sys::TEXTOID && key_type != pg_sys::VARCHAROID {
        return Err(JobError::KeyNotText {
            table: name,
            column: key.into(),
        });
    }
    let deleted = match deleted {
        None => None,
        Some(column) => {
            let kind = match column_type(relid, &name, column)? {
                pg_sys::BOOLOID => SoftDelete::Flag,
                pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID | pg_sys::DATEOID => {
                    SoftDelete::Stamp
                }
                _ => {
                    return Err(JobError::NotSoftDelete {
                        table: name,
                        column: column.into(),
                    })
                }
            };
            Some((quote_identifier(column), kind))
        }
    };
    Ok(Binding {
        scope,
        relation: relid,
        sql_relation: format!(
            "{}.{}",
            quote_identifier(&namespace),
            quote_identifier(&name)
        ),
        key: quote_identifier(key),
        deleted,
    })
}

/// The base type of a user column, or 42703.
fn column_type(relid: pg_sys::Oid, table: &str, column: &str) -> Result<pg_sys::Oid, JobError> {
    let missing = || JobError::NoSuchColumn {
        table: table.into(),
        column: column.into(),
    };
    let c_column = std::ffi::CString::new(column).map_err(|_| missing())?;
    // SAFETY: syscache reads; dropped and system columns are excluded.
    unsafe {
        let attnum = pg_sys::get_attnum(relid, c_column.as_ptr());
        if attnum <= 0 {
            return Err(missing());
        }
        Ok(pg_sys::getBaseType(pg_sys::get_atttype(relid, attnum)))
    }
}

/// `bind_scopes()`: validates and stores the bindings, replacing the old ones.
pub fn bind(requests: &[Request<'_>]) -> Result<(), JobError> {
    crate::store::require_writable("bind scopes")?;
    if crate::oids::relation_oid(c"scopes").is_none() {
        return Err(JobError::ExtensionNotUpdated);
    }
    let mut rows = Vec::new();
    for request in requests {
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
        resolve(request.scope, relid, key, deleted)?;
        rows.push((request.scope, relid, key, deleted));
    }
    Spi::connect_mut(|client| {
        client
            .update("DELETE FROM apollo_jobs.scopes", None, &[])
            .map_err(spi_failed)?;
        for (scope, relid, key, deleted) in &rows {
            client
                .update(
                    "INSERT INTO apollo_jobs.scopes (scope, relation, key_column, deleted_column) \
                     VALUES ($1, $2::pg_catalog.oid::pg_catalog.regclass, $3::pg_catalog.name, \
                     $4::pg_catalog.name)",
                    None,
                    &[
                        DatumWithOid::from(*scope),
                        DatumWithOid::from(*relid),
                        DatumWithOid::from(*key),
                        DatumWithOid::from(*deleted),
                    ],
                )
                .map_err(spi_failed)?;
        }
        Ok(())
    })
}

impl Binding {
    /// The host table, schema-qualified and quoted.
    pub fn sql_relation(&self) -> &str {
        &self.sql_relation
    }

    /// The key column, quoted.
    pub fn sql_key(&self) -> &str {
        &self.key
    }
}

/// The current bindings, read as the caller (who needs SELECT on
/// `apollo_jobs.scopes`), each checked against the catalog; 55000 naming
/// the fix when one no longer fits its host table.
pub fn load() -> Result<Vec<Binding>, JobError> {
    if crate::oids::relation_oid(c"scopes").is_none() {
        return Err(JobError::ExtensionNotUpdated);
    }
    let rows: Vec<(String, pg_sys::Oid, String, Option<String>)> = Spi::connect(|client| {
        let table = client
            .select(
                "SELECT s.scope::pg_catalog.text, s.relation::pg_catalog.oid, \
                 s.key_column::pg_catalog.text, s.deleted_column::pg_catalog.text \
                 FROM apollo_jobs.scopes s ORDER BY s.scope",
                None,
                &[],
            )
            .map_err(spi_failed)?;
        let mut rows = Vec::new();
        for row in table {
            let text = |n| row.get::<String>(n).map_err(spi_failed);
            let scope = text(1)?.unwrap_or_default();
            let relid = row
                .get::<pg_sys::Oid>(2)
                .map_err(spi_failed)?
                .unwrap_or(pg_sys::InvalidOid);
            rows.push((scope, relid, text(3)?.unwrap_or_default(), text(4)?));
        }
        Ok::<_, JobError>(rows)
    })?;
    rows.into_iter()
        .map(|(scope, relid, key, deleted)| {
            let scope = match scope.as_str() {
                "org" => "org",
                "project" => "project",
                _ => {
                    return Err(JobError::BindingBroken {
                        scope: "unknown",
                        why: format!("apollo_jobs.scopes holds an unknown scope \"{scope}\""),
                    })
                }
            };
            resolve(scope, relid, &key, deleted.as_deref()).map_err(|e| JobError::BindingBroken {
                scope,
                why: match e {
                    JobError::NoSuchRelation(_) => "its table no longer exists".into(),
                    other => other.message(),
                },
            })
        })
        .collect()
}

/// Where a statement finds the org or project id it filters by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// The row's own column (`j.org_id`, `j.project_id`): checked per row.
    Row,
    /// A statement parameter every row equals (`$1`, `$2`): checked once
    /// per statement, as an uncorrelated subquery (an InitPlan).
    Param(&'static str),
    /// Not checked: no row of the statement has one (org-class jobs only).
    Absent,
}

/// The visibility condition for jobs aliased `j`, empty when nothing is
/// bound. A listing of one project (or of an org's own jobs) passes the
/// scope ids as parameters, so that each page checks the org and project
/// rows once rather than once per job.
pub struct Visibility {
    /// `AND …` clauses on the row's own scope columns (`Source::Row`).
    pub per_row: String,
    /// Conditions on parameters alone (`Source::Param`), `AND`ed: true for
    /// every row or for none.
    pub gate: Vec<String>,
}

impl Visibility {
    /// Everything as `AND …` clauses of a WHERE.
    pub fn all(&self) -> String {
        let mut sql = self.per_row.clone();
        for g in &self.gate {
            sql.push_str(" AND ");
            sql.push_str(g);
        }
        sql
    }
}

/// See [`Visibility`].
pub fn visibility(bindings: &[Binding], org: Source, project: Source) -> Visibility {
    let mut v = Visibility {
        per_row: String::new(),
        gate: Vec::new(),
    };
    for b in bindings {
        let (alias, column, source) = if b.scope == "org" {
            ("o", "org_id", org)
        } else {
            ("p", "project_id", project)
        };
        let value = match source {
            Source::Row => format!("j.{column}"),
            Source::Param(param) => param.to_string(),
            Source::Absent => continue,
        };
        let live = match &b.deleted {
            None => String::new(),
            Some((column, SoftDelete::Flag)) => format!(" AND {alias}.{column} IS FALSE"),
            Some((column, SoftDelete::Stamp)) => format!(" AND {alias}.{column} IS NULL"),
        };
        let exists = format!(
            "EXISTS (SELECT FROM {rel} {alias} WHERE {alias}.{key} OPERATOR(pg_catalog.=) \
             {value}{live})",
            rel = b.sql_relation,
            key = b.key,
        );
        match source {
            Source::Row if b.scope == "project" => v
                .per_row
                .push_str(&format!(" AND (j.project_id IS NULL OR {exists})")),
            Source::Row => v.per_row.push_str(&format!(" AND {exists}")),
            _ => v.gate.push(exists),
        }
    }
    v
}

thread_local! {
    /// Bumped whenever the bindings or a bound host table may have changed.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Relations whose invalidation bumps the generation.
    static WATCHED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// The current generation of the bindings; registers the callback once.
pub fn generation() -> u64 {
    if !CALLBACK.with(Cell::get) {
        // SAFETY: registered once per backend (the server allows a fixed
        // number of callbacks); the callback only touches thread-locals.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(relation_changed),
                pg_sys::Datum::from(0usize),
            );
            // A renamed or dropped schema changes the qualified names the
            // statements were built with, without a relcache invalidation
            // of the tables in it.
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
                Some(schema_changed),
                pg_sys::Datum::from(0usize),
            );
        };
        CALLBACK.with(|c| c.set(true));
    }
    GENERATION.with(Cell::get)
}

/// Watch these relations (the bindings table and the bound host tables).
pub fn watch(relations: Vec<pg_sys::Oid>) {
    WATCHED.with(|w| *w.borrow_mut() = relations);
}

#[pg_guard]
unsafe extern "C-unwind" fn schema_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let hit = relid == pg_sys::InvalidOid
        || WATCHED.with(|w| w.try_borrow().map_or(true, |w| w.contains(&relid)));
    if hit {
        GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
    }
}

crate::srf::finfo_v1!(pg_finfo_scopes_changed_wrapper);

/// Statement trigger on `apollo_jobs.scopes`: broadcasts a relcache
/// invalidation of the table, which every backend's callback sees at its
/// next transaction or lock (this one's at the next command).
///
/// # Safety
/// Called by PostgreSQL's trigger manager only.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn scopes_changed_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the context is checked to be TriggerData before use.
    unsafe {
        let data = crate::srf::trigger_data(fcinfo).unwrap_or_else(|e| e.raise());
        pg_sys::CacheInvalidateRelcacheByRelid((*(*data).tg_relation).rd_id);
    }
    pg_sys::Datum::from(0usize)
}
