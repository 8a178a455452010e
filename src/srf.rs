//! `RETURNS TABLE` results in materialize mode.
//!
//! Why not pgrx's `TableIterator`: its value-per-call protocol rebuilds the
//! result descriptor from `pg_proc` on every call (decoding the OUT-argument
//! arrays), keeps a multi-call memory context, and needs a second call to
//! say "done". For the API's hot path, a function that returns exactly one
//! row, that was about a quarter of its own cost. Materialize mode with the
//! executor's expected descriptor does the same with one tuplestore row.
//!
//! The three functions that return rows are therefore declared by hand: a
//! `pg_finfo_*` record and a `#[pg_guard]`ed entry point that reads its
//! arguments with `pg_getarg` and hands its row to `Rows::put` (the upsert)
//! or lets a kept plan write its rows into `Rows::store` (the getter and
//! the listing, `spiplan.rs`). The SQL declarations sit above them in
//! `lib.rs`.

use pgrx::pg_sys;

use crate::error::JobError;

/// A call's result set in materialize mode.
pub struct Rows {
    rsinfo: *mut pg_sys::ReturnSetInfo,
}

impl Rows {
    /// Switches the call to materialize mode with the executor's expected
    /// descriptor; a caller that cannot accept a set gets PostgreSQL's own
    /// 0A000. Call before doing any work.
    ///
    /// # Safety
    /// `fcinfo` must be the current call's own `FunctionCallInfo`.
    pub unsafe fn begin(fcinfo: pg_sys::FunctionCallInfo) -> Self {
        // SAFETY: per this function's contract; InitMaterializedSRF raises
        // (0A000) rather than return when the caller cannot take a set, so
        // `resultinfo` is a ReturnSetInfo afterwards.
        unsafe {
            pg_sys::InitMaterializedSRF(fcinfo, pg_sys::MAT_SRF_USE_EXPECTED_DESC);
            Rows {
                rsinfo: (*fcinfo).resultinfo.cast(),
            }
        }
    }

    /// Appends one row (`None` is SQL NULL).
    pub fn put(&self, row: &[Option<pg_sys::Datum>]) -> Result<(), JobError> {
        // SAFETY: `begin` set up setResult and setDesc for this call.
        unsafe {
            let desc = (*self.rsinfo).setDesc;
            if (*desc).natts as usize != row.len() {
                return Err(JobError::Internal(format!(
                    "result has {} columns, the caller expects {}",
                    row.len(),
                    (*desc).natts
                )));
            }
            let mut values: Vec<pg_sys::Datum> = row
                .iter()
                .map(|d| d.unwrap_or(pg_sys::Datum::from(0usize)))
                .collect();
            let mut nulls: Vec<bool> = row.iter().map(Option::is_none).collect();
            pg_sys::tuplestore_putvalues(
                (*self.rsinfo).setResult,
                desc,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
        }
        Ok(())
    }

    /// The result tuplestore, for statements that write into it directly
    /// (`spiplan.rs`). Their columns are cast to the result's types (the
    /// job id as text, which is what the `job_id` domain holds).
    pub fn store(&self) -> *mut pg_sys::Tuplestorestate {
        // SAFETY: `begin` set up setResult for this call.
        unsafe { (*self.rsinfo).setResult }
    }
}

/// The `TriggerData` of a trigger call.
///
/// # Safety
/// `fcinfo` must be the current call's own `FunctionCallInfo`.
pub unsafe fn trigger_data(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Result<*mut pg_sys::TriggerData, JobError> {
    // SAFETY: `context` is either NULL or a Node.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            return Err(JobError::Internal(
                "trigger function not called as a trigger".into(),
            ));
        }
        Ok(context.cast())
    }
}

/// The return value of a materialize-mode call (ignored by the executor).
pub fn done() -> pg_sys::Datum {
    pg_sys::Datum::from(0usize)
}

/// Declares a hand-written V1 function: its `pg_finfo_*` record.
macro_rules! finfo_v1 {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record =
                ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}
pub(crate) use finfo_v1;
