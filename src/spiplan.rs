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

use std::ffi::CString;
use std::ptr::NonNull;

use pgrx::{pg_guard, pg_sys};

use crate::error::JobError;

/// A plan kept for the life of the backend (or until dropped).
pub struct KeptPlan(NonNull<pg_sys::_SPI_plan>);

impl KeptPlan {
    /// Prepares and keeps `sql`. Must be called with SPI connected.
    pub fn prepare(sql: &str, types: &[pg_sys::Oid]) -> Result<Self, JobError> {
        let text =
            CString::new(sql).map_err(|_| JobError::Internal("NUL in a statement".into()))?;
        let mut types = types.to_vec();
        // SAFETY: SPI is connected (the caller's contract); the text and
        // type array outlive the call; a NULL result is checked.
        unsafe {
            let plan = pg_sys::SPI_prepare_cursor(
                text.as_ptr(),
                types.len() as i32,
                types.as_mut_ptr(),
                pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
            );
            let code = pg_sys::SPI_result;
            let plan = NonNull::new(plan)
                .ok_or_else(|| JobError::Internal(format!("SPI_prepare failed ({code})")))?;
            if pg_sys::SPI_keepplan(plan.as_ptr()) != 0 {
                return Err(JobError::Internal("SPI_keepplan failed".into()));
            }
            Ok(KeptPlan(plan))
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
            let rc = pg_sys::SPI_execute_plan_extended(self.0.as_ptr(), &options);
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
        unsafe { pg_sys::SPI_freeplan(self.0.as_ptr()) };
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
