//! A statement run in a subtransaction, with one SQLSTATE turned into a value.
//!
//! Why: the registration's INSERT can raise a unique violation that is not
//! final — a concurrent registration of the same thermos id won, or an index
//! being built or rebuilt concurrently (`REINDEX CONCURRENTLY`'s `_ccnew`
//! copy) reported it. PostgreSQL's `INSERT … ON CONFLICT DO NOTHING` does not
//! help there: it raises on indexes other than its arbiter and, while the
//! arbiter is swapped, fails to infer one (42P10). So the INSERT runs plain,
//! inside a subtransaction; a 23505 rolls the subtransaction back and the
//! caller re-reads. Any other error rolls back and is re-raised unchanged.
//! This is what PL/pgSQL's `EXCEPTION WHEN unique_violation` does.

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::{PgSqlErrorCode, PgTryBuilder};

/// Runs `f` in a subtransaction. `Ok(result)` when it completed (the
/// subtransaction is committed into the current one); `Err(error)` when it
/// raised `unique_violation` (rolled back; the error can be re-raised as it
/// was). Other errors are re-raised.
pub fn catching_unique_violation<R>(f: impl FnOnce() -> R) -> Result<R, Box<CaughtError>> {
    // SAFETY: the saved context and resource owner are restored on both
    // paths, as PL/pgSQL's exception blocks do; the subtransaction is
    // released or rolled back before this function returns or re-raises.
    let (context, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    let restore = move || {
        // SAFETY: the values saved above, still valid in the outer transaction.
        unsafe {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
    };
    let rollback = move || {
        // SAFETY: the subtransaction begun above is the current one (pgrx
        // has already copied and flushed the error state).
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
    };
    PgTryBuilder::new(AssertUnwindSafe(|| {
        let result = f();
        // SAFETY: `f` returned normally inside the subtransaction begun above.
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        restore();
        Ok(result)
    }))
    .catch_when(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, |error| {
        rollback();
        Err(Box::new(error))
    })
    .catch_others(|error: CaughtError| {
        rollback();
        error.rethrow()
    })
    .execute()
}
