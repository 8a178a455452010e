//! Text datums as bytes, read in place when they are stored inline.
//!
//! Why: pgrx's `FromDatum for &[u8]` always calls `pg_detoast_datum_packed`
//! through a guarded FFI boundary, although the short values this extension
//! reads (ids, scopes, job types, thermos ids) are almost always inline and
//! need no detoasting. On the hot path that was ten guarded calls per
//! registration, about 2% of its instructions. An inline value (1-byte or
//! 4-byte header, neither compressed nor external) is read where it lies;
//! anything else is detoasted exactly as before.

use pgrx::pg_sys;
use pgrx::varlena::{varatt_is_1b_e, varatt_is_4b_c, varlena_to_byte_slice};

/// The bytes of a non-NULL text datum.
///
/// # Safety
/// `datum` must be a valid varlena that outlives `'a`; a detoasted copy is
/// allocated in the current memory context, as pgrx would.
pub unsafe fn bytes<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    let value = datum.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: `value` is a valid varlena per this function's contract; an
    // inline value (1-byte or 4-byte header, not compressed, not external)
    // is its own bytes, anything else is detoasted into a fresh copy.
    unsafe {
        let inline = !(varatt_is_1b_e(value) || varatt_is_4b_c(value));
        varlena_to_byte_slice(if inline {
            value
        } else {
            pg_sys::pg_detoast_datum_packed(value)
        })
    }
}
