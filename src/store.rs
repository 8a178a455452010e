//! Reads and writes of `apollo_jobs.jobs` through SPI plans kept per backend.
//!
//! Why plans are kept: parsing and planning a one-row statement on every call
//! would cost more than running it. Each plan is prepared once per backend,
//! `keep()`-ed, and rebuilt only when the relation it reads is no longer the
//! one it was prepared against (dropped and re-created). The hot path of the
//! API, the re-post of a known workflow (the 409), does not reach SPI at all
//! when the direct index probe in `probe.rs` can answer it.
//!
//! Why every operator is written `OPERATOR(pg_catalog.=)` and every type
//! `pg_catalog.text`: a kept plan is re-analysed under the caller's
//! search_path whenever that changes, so nothing in these statements may
//! resolve through it.
//!
//! Why all upsert plans are prepared as mutating: a mutating SPI statement
//! takes a fresh snapshot, so at READ COMMITTED the re-read after a lost race
//! sees the winner's committed row. At REPEATABLE READ and SERIALIZABLE a
//! winner the snapshot cannot see ends in 40001, the retryable outcome; a
//! winner hidden by row-level security ends in 23505, which is final.

use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiError};

use crate::args::Registration;
use crate::error::{JobError, OrRaise};
use crate::id::{self, JobClass};
use crate::oids;
use crate::probe::{self, Holder, Probed};
use crate::subxact;
use crate::text;

/// Lookups before giving up on a row that keeps vanishing between a lost
/// insert race and the re-read (a concurrent delete); ends in the last
/// unique violation (23505).
const RACE_ATTEMPTS: usize = 3;

const LOOKUP_SQL: &CStr = c"SELECT j.job_id::pg_catalog.text, j.job_class::pg_catalog.text, \
    j.org_id::pg_catalog.text, j.project_id::pg_catalog.text, j.job_type::pg_catalog.text \
    FROM apollo_jobs.jobs j WHERE j.thermos_job_id OPERATOR(pg_catalog.=) $1";

/// The INSERT returns what it stored, so that a trigger or rule that
/// changed the row is caught (the subtransaction is then rolled back).
const INSERT_SQL: &CStr = c"INSERT INTO apollo_jobs.jobs \
    (job_id, job_class, org_id, project_id, job_type, thermos_job_id) \
    VALUES ($1, $2, $3, $4, $5, $6) \
    RETURNING job_id::pg_catalog.text, job_class::pg_catalog.text, org_id::pg_catalog.text, \
    project_id::pg_catalog.text, job_type::pg_catalog.text, thermos_job_id::pg_catalog.text";

const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);

struct UpsertPlans {
    lookup: OwnedPreparedStatement,
    insert: OwnedPreparedStatement,
}

/// Plans prepared against one relation, rebuilt when its OID changes.
pub struct PlanCache<K: PartialEq + Copy + 'static, T: 'static> {
    slot: RefCell<Option<(K, Rc<T>)>>,
}

impl<K: PartialEq + Copy, T> PlanCache<K, T> {
    pub const fn new() -> Self {
        Self {
            slot: RefCell::new(None),
        }
    }

    /// The plans for `key` (e.g. the relation's current OID). Hands out an
    /// `Rc` so no borrow is held while a plan runs (a nested call from a
    /// trigger re-enters safely).
    pub fn get(
        &self,
        key: K,
        prepare: impl FnOnce() -> Result<T, JobError>,
    ) -> Result<Rc<T>, JobError> {
        if let Some((cached, plans)) = &*self.slot.borrow() {
            if *cached == key {
                return Ok(Rc::clone(plans));
            }
        }
        let plans = Rc::new(prepare()?);
        *self.slot.borrow_mut() = Some((key, Rc::clone(&plans)));
        Ok(plans)
    }
}

thread_local! {
    static UPSERT: PlanCache<pg_sys::Oid, UpsertPlans> = const { PlanCache::new() };
}

pub fn spi_failed(e: SpiError) -> JobError {
    JobError::Internal(format!("SPI failed: {e}"))
}

fn prepare_upsert(client: &SpiClient<'_>) -> Result<UpsertPlans, JobError> {
    Ok(UpsertPlans {
        lookup: client
            .prepare_mut(LOOKUP_SQL, &[TEXT])
            .map_err(spi_failed)?
            .keep(),
        insert: client
            .prepare_mut(INSERT_SQL, &[TEXT; 6])
            .map_err(spi_failed)?
            .keep(),
    })
}

/// A fresh id, from this backend's generator.
pub fn mint(class: JobClass) -> Result<String, JobError> {
    // SAFETY: MyProcPid is set once at backend start and only read here.
    let pid = unsafe { pg_sys::MyProcPid } as u32;
    id::mint(class, pid).map_err(|e| JobError::EntropyUnavailable(e.0))
}

/// Refuses a write on a hot standby or in a read-only transaction with
/// 25006, before anything would assign a transaction id.
pub fn require_writable(what: &'static str) -> Result<(), JobError> {
    // SAFETY: reads of the server's recovery state and a transaction flag.
    let read_only = unsafe { pg_sys::RecoveryInProgress() || pg_sys::XactReadOnly };
    if read_only {
        Err(JobError::ReadOnly(what))
    } else {
        Ok(())
    }
}

/// Lookup-first get-or-create. Returns (job id bytes, created).
///
/// The lookup is a direct index probe when the probe can answer (see
/// `probe.rs`), else the kept SPI plan; a lookup that finds nothing goes to
/// the INSERT, run in a subtransaction (`subxact.rs`). An INSERT that loses
/// a race (23505) is rolled back and re-read.
pub fn upsert(reg: &Registration<'_>) -> Result<(Vec<u8>, bool), JobError> {
    let table = oids::locked_jobs().ok_or(JobError::JobsTableMissing)?;
    // SAFETY: in a transaction, with `table` locked by locked_jobs().
    let probed = unsafe { probe::lookup(table, reg) };
    let mut skip_lookup = false;
    match probed {
        Some(Probed::Same(job_id)) => return Ok((job_id, false)),
        Some(Probed::Different) => return Err(JobError::ThermosIdTaken),
        Some(Probed::Missing) => skip_lookup = true,
        None => {}
    }
    Spi::connect_mut(|client| {
        let plans = UPSERT.with(|cache| cache.get(table, || prepare_upsert(client)))?;
        let mut last_violation = None;
        for _ in 0..RACE_ATTEMPTS {
            if !std::mem::take(&mut skip_lookup) {
                match lookup(client, &plans, reg)? {
                    Probed::Same(job_id) => return Ok((job_id, false)),
                    Probed::Different => return Err(JobError::ThermosIdTaken),
                    Probed::Missing => {}
                }
            }
            require_writable("register a new job")?;
            // SAFETY: `table` is locked by locked_jobs().
            if unsafe { has_deferrable_unique_index(table) } {
                check_uniqueness_now(client, table)?;
            }
            let job_id = mint(reg.job_class)?;
            let args = [
                DatumWithOid::from(job_id.as_str()),
                DatumWithOid::from(reg.job_class.as_str()),
                DatumWithOid::from(reg.org_id),
                DatumWithOid::from(reg.project_id),
                DatumWithOid::from(reg.job_type),
                DatumWithOid::from(reg.thermos_job_id),
            ];
            let stored = [
                Some(job_id.as_bytes()),
                Some(reg.job_class.as_str().as_bytes()),
                Some(reg.org_id.as_bytes()),
                reg.project_id.map(str::as_bytes),
                Some(reg.job_type.as_bytes()),
                Some(reg.thermos_job_id.as_bytes()),
            ];
            let inserted = subxact::catching_unique_violation(|| {
                let table = client
                    .update(&plans.insert, None, &args)
                    .map_err(spi_failed)
                    .or_raise();
                match table.len() {
                    0 => false,
                    // Raised inside the subtransaction, so the row goes with it.
                    1 if returned_row_is(table, &stored).or_raise() => true,
                    _ => JobError::RegistrationAltered.raise(),
                }
            });
            let violation = match inserted {
                Ok(true) => return Ok((job_id.into_bytes(), true)),
                Ok(false) => return Err(JobError::RegistrationSuppressed),
                Err(violation) => violation,
            };
            // A unique violation. Re-read the thermos id: a concurrent
            // registration that won (or a row an index being rebuilt
            // reported) answers as any lookup.
            match lookup(client, &plans, reg)? {
                Probed::Same(job_id) => return Ok((job_id, false)),
                Probed::Different => return Err(JobError::ThermosIdTaken),
                Probed::Missing => {}
            }
            // This snapshot or policy cannot see a row holding it: ask the
            // index who holds it.
            // SAFETY: in a transaction, with `table` locked by locked_jobs().
            let holder = unsafe { probe::holder(table, reg) };
            let repeatable =
                // SAFETY: reads the current transaction's isolation level.
                unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32;
            match holder {
                // Another tenant's registration, hidden by row-level security: final.
                Some(Holder::HiddenByPolicy) => return Err(JobError::ThermosIdTaken),
                // Committed after this transaction's snapshot was taken.
                Some(Holder::AfterSnapshot) | None if repeatable => {
                    return Err(JobError::ConcurrentRegistration)
                }
                // The index cannot be read directly (a partitioned table, no
                // usable index): a policy is the one other explanation.
                None if rls_hides_rows(table) => return Err(JobError::ThermosIdTaken),
                // Nobody holds it now — another unique index of the table
                // refused the row, or the winner was deleted in between — or
                // (READ COMMITTED) it was committed just now: try again. A
                // violation that keeps coming is another index's, and its
                // own error is the answer.
                Some(Holder::Nobody | Holder::AfterSnapshot) | None => {
                    last_violation = Some(violation)
                }
            }
            skip_lookup = true;
        }
        // Still refused after every attempt: the last violation stands.
        if let Some(violation) = last_violation {
            (*violation).rethrow();
        }
        Err(JobError::ConcurrentRegistration)
    })
}

/// True iff `table` has a deferrable unique index (the rare table a DBA
/// changed so): a client may have deferred its check to COMMIT, where a
/// conflict would surface only after `created = t` was answered.
///
/// # Safety
/// `table` must be locked by this transaction.
unsafe fn has_deferrable_unique_index(table: pg_sys::Oid) -> bool {
    // SAFETY: the locked table's current index list; each pg_index row is
    // read from the syscache and released; a row that vanished is skipped.
    unsafe {
        let heap = pg_sys::table_open(table, pg_sys::NoLock as pg_sys::LOCKMODE);
        let mut found = false;
        for oid in probe::index_oids(heap) {
            let tuple = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::INDEXRELID as i32,
                pg_sys::Datum::from(oid),
            );
            if tuple.is_null() {
                continue;
            }
            let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_index>(tuple);
            found |= (*form).indisunique && !(*form).indimmediate;
            pg_sys::ReleaseSysCache(tuple);
        }
        pg_sys::table_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        found
    }
}

/// `SET CONSTRAINTS … IMMEDIATE` for the table's deferrable unique
/// constraints, so that a conflict is raised by the INSERT itself (and
/// re-read) instead of at COMMIT. They stay immediate for the rest of the
/// transaction.
fn check_uniqueness_now(client: &mut SpiClient<'_>, table: pg_sys::Oid) -> Result<(), JobError> {
    let names = client
        .select(
            "SELECT pg_catalog.string_agg(pg_catalog.format('%I.%I', n.nspname, c.conname), ', ') \
             FROM pg_catalog.pg_constraint c \
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.connamespace \
             WHERE c.conrelid OPERATOR(pg_catalog.=) $1 AND c.condeferrable \
             AND c.contype OPERATOR(pg_catalog.=) ANY (ARRAY['u', 'p', 'x']::pg_catalog.\"char\"[])",
            Some(1),
            &[DatumWithOid::from(table)],
        )
        .map_err(spi_failed)?
        .first()
        .get_one::<String>()
        .map_err(spi_failed)?;
    if let Some(names) = names {
        client
            .update(&format!("SET CONSTRAINTS {names} IMMEDIATE"), None, &[])
            .map_err(spi_failed)?;
    }
    Ok(())
}

/// True iff the one row an INSERT … RETURNING gave back is `expected`,
/// column for column, byte for byte.
fn returned_row_is(
    table: pgrx::spi::SpiTupleTable<'_>,
    expected: &[Option<&[u8]>; 6],
) -> Result<bool, JobError> {
    let row = table.first();
    for (i, want) in expected.iter().enumerate() {
        let datum = row.get_datum_by_ordinal(i + 1).map_err(spi_failed)?;
        // SAFETY: every returned column is cast to text; the tuple table
        // lives until the next SPI call.
        let got = datum.map(|d| unsafe { text::bytes(d) });
        if got != *want {
            return Ok(false);
        }
    }
    Ok(true)
}

/// True iff row-level security filters `table` for the current user.
fn rls_hides_rows(table: pg_sys::Oid) -> bool {
    // SAFETY: a catalog read about a relation this transaction has locked.
    unsafe {
        pg_sys::check_enable_rls(table, pg_sys::InvalidOid, true)
            == pg_sys::CheckEnableRlsResult::RLS_ENABLED as core::ffi::c_int
    }
}

/// The SQL form of the lookup, for when the probe declines. Columns are read
/// as bytes, whatever the database encoding.
fn lookup(
    client: &SpiClient<'_>,
    plans: &UpsertPlans,
    reg: &Registration<'_>,
) -> Result<Probed, JobError> {
    let table = client
        .select(
            &plans.lookup,
            Some(1),
            &[DatumWithOid::from(reg.thermos_job_id)],
        )
        .map_err(spi_failed)?;
    if table.is_empty() {
        return Ok(Probed::Missing);
    }
    let row = table.first();
    let column = |ordinal: usize| -> Result<Option<&[u8]>, JobError> {
        let datum = row.get_datum_by_ordinal(ordinal).map_err(spi_failed)?;
        // SAFETY: every column of the statement is cast to text; the tuple
        // table lives until the next SPI call or the end of this connection.
        Ok(datum.map(|d| unsafe { text::bytes(d) }))
    };
    let same = column(2)? == Some(reg.job_class.as_str().as_bytes())
        && column(3)? == Some(reg.org_id.as_bytes())
        && column(4)? == reg.project_id.map(str::as_bytes)
        && column(5)? == Some(reg.job_type.as_bytes());
    Ok(match (same, column(1)?) {
        (true, Some(id)) => Probed::Same(id.to_vec()),
        _ => Probed::Different,
    })
}
