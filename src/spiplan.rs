//! Kept SPI plans run straight into a function's result set.
//!
//! Why not pgrx's prepared statements for the reads: a page of `list_jobs`
//! is up to a thousand rows, and through SPI's tuple table each row was
//! formed into a heap tuple by SPI and copied again into the result
//! tuplestore. Here the plan runs with a `DestReceiver` that puts each
//! result slot into the tuplestore directly, as PL/pgSQL's `RETURN QUERY`
//! does. Plans are prepared with `CURSOR_OPT_GENERIC_PLAN` (planned once,
//! not per call: the statements are written so that their one good plan
//! does not depend on the parameter values).

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use pgrx::{pg_guard, pg_sys};

use crate::error::JobError;

/// Planner settings a statement is planned with: (GUC name, value).
pub type Settings = &'static [(&'static CStr, &'static CStr)];

/// A plan kept for the life of the backend (or until dropped).
///
/// Why settings here and not in the function's `SET` clause: a `SET` clause
/// is applied and rolled back around every call (on PostgreSQL 15 the
/// roll-back visits every GUC), although the settings matter only while
/// the statement is planned, which for a kept generic plan is once. So a
/// call applies them only when the plan cache has no valid generic plan to
/// hand out (the first run, or after an invalidation), i.e. exactly when
/// SPI is about to plan. A re-plan can still happen without them: the
/// plan is re-validated when SPI locks its tables, and taking a lock can
/// process an invalidation. The plan's generation tells: a generic plan
/// whose generation is not the one last made with the settings is prepared
/// again, with them, on the next call that is not nested inside a run of
/// the same plan (a run still executing it must not see it freed). Under
/// `plan_cache_mode = force_custom_plan`, which overrides the generic-plan
/// flag, there is no generic plan to hand out, so every call plans, with
/// the settings (the one call after switching the mode may not).
pub struct KeptPlan {
    plan: Cell<NonNull<pg_sys::_SPI_plan>>,
    sql: CString,
    types: Vec<pg_sys::Oid>,
    settings: Settings,
    /// The plan source's generation after the last run with `settings`.
    settled: Cell<Option<i32>>,
    /// Runs of this plan in progress (a statement of the plan can call
    /// back into the same function, e.g. from a host row-level security
    /// policy).
    active: Cell<u32>,
}

/// Counts a run in progress for as long as it lives, also when the run
/// raises (its unwinding drops this).
struct Active<'a>(&'a Cell<u32>);

impl<'a> Active<'a> {
    fn enter(count: &'a Cell<u32>) -> Self {
        count.set(count.get() + 1);
        Active(count)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Plans made while this backend's planner settings were not applied
/// (test builds): (with the settings, without).
#[cfg(any(test, feature = "pg_test"))]
pub mod counters {
    use std::cell::Cell;
    thread_local! {
        pub static PLANNED_WITH: Cell<i64> = const { Cell::new(0) };
        pub static PLANNED_WITHOUT: Cell<i64> = const { Cell::new(0) };
    }
}

impl KeptPlan {
    /// Prepares and keeps `sql`, to be planned with `settings`. Must be
    /// called with SPI connected.
    pub fn prepare(sql: &str, types: &[pg_sys::Oid], settings: Settings) -> Result<Self, JobError> {
        let sql = CString::new(sql).map_err(|_| JobError::Internal("NUL in a statement".into()))?;
        let types = types.to_vec();
        let plan = Self::keep(&sql, &types)?;
        Ok(KeptPlan {
            plan: Cell::new(plan),
            sql,
            types,
            settings,
            settled: Cell::new(None),
            active: Cell::new(0),
        })
    }

    fn keep(sql: &CStr, types: &[pg_sys::Oid]) -> Result<NonNull<pg_sys::_SPI_plan>, JobError> {
        let mut types = types.to_vec();
        // SAFETY: SPI is connected (the caller's contract); the text and
        // type array outlive the call; a NULL result is checked.
        unsafe {
            let plan = pg_sys::SPI_prepare_cursor(
                sql.as_ptr(),
                types.len() as i32,
                types.as_mut_ptr(),
                pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
            );
            let code = pg_sys::SPI_result;
            let plan = NonNull::new(plan)
                .ok_or_else(|| JobError::Internal(format!("SPI_prepare failed ({code})")))?;
            if pg_sys::SPI_keepplan(plan.as_ptr()) != 0 {
                pg_sys::SPI_freeplan(plan.as_ptr());
                return Err(JobError::Internal("SPI_keepplan failed".into()));
            }
            Ok(plan)
        }
    }

    /// The plan's one cached plan source.
    fn source(&self) -> Result<*mut pg_sys::CachedPlanSource, JobError> {
        // SAFETY: the plan is a kept SPI plan of one statement (`prepare`);
        // its source list lives as long as the plan and is only read.
        unsafe {
            let list = pg_sys::SPI_plan_get_plan_sources(self.plan.get().as_ptr());
            if list.is_null() || (*list).length != 1 {
                return Err(JobError::Internal(
                    "a kept plan of one statement expected".into(),
                ));
            }
            Ok((*(*list).elements).ptr_value.cast())
        }
    }

    /// Runs the plan with `args` (type, value or NULL). With `into`, the
    /// result rows go straight into that tuplestore; without, into SPI's
    /// tuple table (`SPI_tuptable`). Returns the number of rows. Must be
    /// called with SPI connected.
    pub fn run(
        &self,
        args: &[(pg_sys::Oid, Option<pg_sys::Datum>)],
        into: Option<*mut pg_sys::Tuplestorestate>,
    ) -> Result<u64, JobError> {
        if self.settings.is_empty() {
            return self.execute(args, into);
        }
        let (ready, generation) = self.state()?;
        if ready && self.settled.get() != Some(generation) && self.active.get() == 0 {
            // A generic plan made without the settings: prepare it again.
            let fresh = Self::keep(&self.sql, &self.types)?;
            let stale = self.plan.replace(fresh);
            self.settled.set(None);
            // SAFETY: the stale plan was kept by `keep`; no run of it is in
            // progress (`active` is 0) and nothing else holds it. Freed
            // once, here.
            unsafe { pg_sys::SPI_freeplan(stale.as_ptr()) };
            return self.run(args, into);
        }
        let _active = Active::enter(&self.active);
        if ready {
            let rows = self.execute(args, into)?;
            #[cfg(any(test, feature = "pg_test"))]
            if self.state()?.1 != generation {
                counters::PLANNED_WITHOUT.with(|c| c.set(c.get() + 1));
            }
            return Ok(rows);
        }
        #[cfg(any(test, feature = "pg_test"))]
        counters::PLANNED_WITH.with(|c| c.set(c.get() + 1));
        // SAFETY: the settings are applied at a new GUC nesting level and
        // undone at that level after the run. If the run raises, the
        // (sub)transaction's abort undoes every level above its own, as it
        // does for a function's SET clause.
        unsafe {
            let level = pg_sys::NewGUCNestLevel();
            for (name, value) in self.settings {
                pg_sys::set_config_option(
                    name.as_ptr(),
                    value.as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                    true,
                    pgrx::PgLogLevel::ERROR as i32,
                    false,
                );
            }
            let rows = self.execute(args, into);
            pg_sys::AtEOXact_GUC(true, level);
            self.settled.set(Some(self.state()?.1));
            rows
        }
    }

    /// Whether the plan cache holds a generic plan it will hand out as it
    /// is (valid, and not a transient plan made stale by a newer
    /// transaction xmin), and the plan source's generation.
    fn state(&self) -> Result<(bool, i32), JobError> {
        let source = self.source()?;
        // SAFETY: `source` is this plan's live CachedPlanSource, and its
        // generic plan (if any) lives as long as it does; both only read.
        // TransactionXmin is this backend's.
        unsafe {
            let gplan = (*source).gplan;
            let ready = (*source).is_valid
                && !gplan.is_null()
                && (*gplan).is_valid
                && ((*gplan).saved_xmin == pg_sys::InvalidTransactionId
                    || (*gplan).saved_xmin == pg_sys::TransactionXmin);
            Ok((ready, (*source).generation))
        }
    }

    fn execute(
        &self,
        args: &[(pg_sys::Oid, Option<pg_sys::Datum>)],
        into: Option<*mut pg_sys::Tuplestorestate>,
    ) -> Result<u64, JobError> {
        // SAFETY: SPI is connected (the caller's contract); the parameter
        // list is allocated in the current memory context with room for
        // `args.len()` entries; the receiver lives on this stack frame for
        // the whole execution and is only called by the executor during it.
        unsafe {
            let params = pg_sys::makeParamList(args.len() as i32);
            let slots = (*params).params.as_mut_slice(args.len());
            for (slot, (ptype, value)) in slots.iter_mut().zip(args) {
                *slot = pg_sys::ParamExternData {
                    value: value.unwrap_or(pg_sys::Datum::from(0usize)),
                    isnull: value.is_none(),
                    pflags: pg_sys::PARAM_FLAG_CONST as u16,
                    ptype: *ptype,
                };
            }
            let mut receiver = IntoStore {
                base: pg_sys::DestReceiver {
                    receiveSlot: Some(receive_slot),
                    rStartup: Some(startup),
                    rShutdown: Some(shutdown),
                    rDestroy: Some(shutdown),
                    mydest: pg_sys::CommandDest::DestTuplestore,
                },
                store: into.unwrap_or(std::ptr::null_mut()),
            };
            let options = pg_sys::SPIExecuteOptions {
                params,
                // What pgrx does: read-only (the statement's own snapshot)
                // until this transaction has written anything.
                read_only: pg_sys::GetCurrentTransactionIdIfAny() == pg_sys::InvalidTransactionId,
                dest: if into.is_some() {
                    (&raw mut receiver).cast()
                } else {
                    std::ptr::null_mut()
                },
                ..Default::default()
            };
            let rc = pg_sys::SPI_execute_plan_extended(self.plan.get().as_ptr(), &options);
            if rc < 0 {
                return Err(JobError::Internal(format!(
                    "SPI_execute_plan_extended failed ({rc})"
                )));
            }
            Ok(pg_sys::SPI_processed)
        }
    }
}

impl Drop for KeptPlan {
    fn drop(&mut self) {
        // SAFETY: the plan was kept by `prepare` and is freed once, here.
        unsafe { pg_sys::SPI_freeplan(self.plan.get().as_ptr()) };
    }
}

/// A `DestReceiver` that appends every slot to a tuplestore.
#[repr(C)]
struct IntoStore {
    base: pg_sys::DestReceiver,
    store: *mut pg_sys::Tuplestorestate,
}

#[pg_guard]
unsafe extern "C-unwind" fn receive_slot(
    slot: *mut pg_sys::TupleTableSlot,
    receiver: *mut pg_sys::DestReceiver,
) -> bool {
    // SAFETY: `receiver` is an `IntoStore` (its first field is the
    // DestReceiver), set up by `KeptPlan::run` with a live tuplestore, which
    // copies the slot into its own memory context.
    unsafe {
        let me = receiver.cast::<IntoStore>();
        pg_sys::tuplestore_puttupleslot((*me).store, slot);
    }
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(
    _receiver: *mut pg_sys::DestReceiver,
    _operation: i32,
    _desc: pg_sys::TupleDesc,
) {
}

#[pg_guard]
unsafe extern "C-unwind" fn shutdown(_receiver: *mut pg_sys::DestReceiver) {}
