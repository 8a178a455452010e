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
//! sees the winner's committed row. At REPEATABLE READ and SERIALIZABLE the
//! server itself answers `ON CONFLICT DO NOTHING` against a row the snapshot
//! cannot see with 40001, which is the retryable outcome the contract wants.

use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiError, SpiTupleTable};

use crate::args::Registration;
use crate::error::JobError;
use crate::id::{self, JobClass};
use crate::oids;
use crate::probe::{self, Probed};
use crate::srf::Rows;

/// Lookups before giving up on a row that keeps vanishing between a lost
/// insert race and the re-read (a concurrent delete); ends in 40001.
const RACE_ATTEMPTS: usize = 3;

const LOOKUP_SQL: &CStr =
    c"SELECT j.job_id::pg_catalog.text, j.job_class, j.org_id, j.project_id, j.job_type \
    FROM apollo_jobs.jobs j WHERE j.thermos_job_id OPERATOR(pg_catalog.=) $1";

const INSERT_SQL: &CStr = c"INSERT INTO apollo_jobs.jobs \
    (job_id, job_class, org_id, project_id, job_type, thermos_job_id) \
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (thermos_job_id) DO NOTHING";

const GETTER_SQL: &CStr =
    c"SELECT v.job_id, v.job_class, v.org_id, v.project_id, v.job_type, v.thermos_job_id, \
    v.created_at FROM apollo_jobs.visible_jobs v \
    WHERE v.job_id OPERATOR(pg_catalog.=) $1 AND v.org_id OPERATOR(pg_catalog.=) $2 \
    AND (v.project_id OPERATOR(pg_catalog.=) $3 OR (v.project_id IS NULL AND $3 IS NULL))";

const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);

struct UpsertPlans {
    lookup: OwnedPreparedStatement,
    insert: OwnedPreparedStatement,
}

struct GetterPlan(OwnedPreparedStatement);

/// Plans prepared against one relation, rebuilt when its OID changes.
struct PlanCache<T: 'static> {
    slot: RefCell<Option<(pg_sys::Oid, Rc<T>)>>,
}

impl<T> PlanCache<T> {
    const fn new() -> Self {
        Self {
            slot: RefCell::new(None),
        }
    }

    /// The plans for relation `oid` (its current incarnation). Hands out an
    /// `Rc` so no borrow is held while a plan runs (a nested call from a
    /// trigger re-enters safely).
    fn get(
        &self,
        oid: pg_sys::Oid,
        client: &SpiClient<'_>,
        prepare: fn(&SpiClient<'_>) -> Result<T, SpiError>,
    ) -> Result<Rc<T>, JobError> {
        if let Some((cached, plans)) = &*self.slot.borrow() {
            if *cached == oid {
                return Ok(Rc::clone(plans));
            }
        }
        let plans = Rc::new(prepare(client).map_err(spi_failed)?);
        *self.slot.borrow_mut() = Some((oid, Rc::clone(&plans)));
        Ok(plans)
    }
}

thread_local! {
    static UPSERT: PlanCache<UpsertPlans> = const { PlanCache::new() };
    static GETTER: PlanCache<GetterPlan> = const { PlanCache::new() };
}

fn spi_failed(e: SpiError) -> JobError {
    JobError::Internal(format!("SPI failed: {e}"))
}

fn prepare_upsert(client: &SpiClient<'_>) -> Result<UpsertPlans, SpiError> {
    Ok(UpsertPlans {
        lookup: client.prepare_mut(LOOKUP_SQL, &[TEXT])?.keep(),
        insert: client.prepare_mut(INSERT_SQL, &[TEXT; 6])?.keep(),
    })
}

fn prepare_getter(client: &SpiClient<'_>) -> Result<GetterPlan, SpiError> {
    Ok(GetterPlan(client.prepare(GETTER_SQL, &[TEXT; 3])?.keep()))
}

/// A fresh id, from this backend's generator.
pub fn mint(class: JobClass) -> Result<String, JobError> {
    // SAFETY: MyProcPid is set once at backend start and only read here.
    let pid = unsafe { pg_sys::MyProcPid } as u32;
    id::mint(class, pid).map_err(|e| JobError::EntropyUnavailable(e.0))
}

/// Lookup-first get-or-create. Returns (job id, created).
///
/// The lookup is a direct index probe when the probe can answer (see
/// `probe.rs`), else the kept SPI plan; a probe that finds nothing goes
/// straight to the INSERT. A lost insert race is re-read through SPI.
pub fn upsert(reg: &Registration<'_>) -> Result<(String, bool), JobError> {
    let oids = oids::get();
    let table = oids.jobs.ok_or(JobError::JobsTableMissing)?;
    let probed = match oids.thermos_index {
        // SAFETY: in a transaction; OIDs come from the catalog and are re-validated under lock.
        Some(index) => unsafe { probe::lookup(table, index, reg) },
        None => None,
    };
    let mut skip_lookup = false;
    match probed {
        Some(Probed::Same(job_id)) => return Ok((job_id, false)),
        Some(Probed::Different) => return Err(JobError::ThermosIdTaken),
        Some(Probed::Missing) => skip_lookup = true,
        None => {}
    }
    Spi::connect_mut(|client| {
        let plans = UPSERT.with(|cache| cache.get(table, client, prepare_upsert))?;
        for _ in 0..RACE_ATTEMPTS {
            if !std::mem::take(&mut skip_lookup) {
                match lookup(client, &plans, reg)? {
                    Probed::Same(job_id) => return Ok((job_id, false)),
                    Probed::Different => return Err(JobError::ThermosIdTaken),
                    Probed::Missing => {}
                }
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
            let inserted = client
                .update(&plans.insert, None, &args)
                .map_err(spi_failed)?
                .len();
            if inserted == 1 {
                return Ok((job_id, true));
            }
            // Lost the race to a transaction that committed first: re-read.
        }
        Err(JobError::ConcurrentRegistration)
    })
}

/// The SQL form of the lookup, for when the probe declines.
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
    let same = column::<&str>(&row, 2)? == reg.job_class.as_str()
        && column::<&str>(&row, 3)? == reg.org_id
        && row.get::<&str>(4).map_err(spi_failed)? == reg.project_id
        && column::<&str>(&row, 5)? == reg.job_type;
    Ok(if same {
        Probed::Same(column::<String>(&row, 1)?)
    } else {
        Probed::Different
    })
}

/// The job if it is visible to (org_id, project_id); `None` otherwise.
pub fn job_by_id(
    job_id: &str,
    org_id: &str,
    project_id: Option<&str>,
    rows: &Rows,
) -> Result<(), JobError> {
    let view = oids::get().visible_jobs.ok_or(JobError::JobsTableMissing)?;
    Spi::connect(|client| {
        let plan = GETTER.with(|cache| cache.get(view, client, prepare_getter))?;
        if !id::is_valid(job_id.as_bytes()) {
            return Ok(());
        }
        let args = [
            DatumWithOid::from(job_id),
            DatumWithOid::from(org_id),
            DatumWithOid::from(project_id),
        ];
        let found = client
            .select(&plan.0, Some(1), &args)
            .map_err(spi_failed)?
            .len();
        if found == 0 {
            return Ok(());
        }
        // The statement's columns are the function's result columns, type
        // for type: hand SPI's tuple to the result set as it is, instead of
        // decoding and re-encoding seven columns.
        // SAFETY: SPI_tuptable holds the result of the statement just run,
        // valid until the next SPI call or SPI_finish.
        unsafe {
            let table = pg_sys::SPI_tuptable;
            rows.put_tuple((*table).tupdesc, *(*table).vals)
        }
    })
}

/// A NOT NULL column of the row the table is positioned on.
fn column<T: IntoDatum + FromDatum>(
    row: &SpiTupleTable<'_>,
    ordinal: usize,
) -> Result<T, JobError> {
    row.get(ordinal)
        .map_err(spi_failed)?
        .ok_or_else(|| JobError::Internal(format!("column {ordinal} of apollo_jobs.jobs is null")))
}
