//! Text datums as bytes, read in place when they are stored inline.
//!
//! Why: pgrx's `FromDatum for &[u8]` always calls `pg_detoast_datum_packed`
//! through a guarded FFI boundary, although the short values this extension
//! reads (ids, scopes, job types, thermos ids) are almost always inline and
//! need no detoasting. On the hot path that was ten guarded calls per
//! registration, about 2% of its instructions. An inline value (1-byte or
//! 4-byte header, neither compressed nor external) is read where it lies;
//! anything else is detoasted exactly as before.
//!
//! Also here: the arguments of the hand-declared functions (`arg`), read
//! as bytes and checked as UTF-8 (`utf8`), so no input can trip a UTF-8
//! assumption into an internal error.

use pgrx::pg_sys;

use crate::error::JobError;
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

/// Text argument bytes as UTF-8. In a UTF-8 database this never fails; in
/// another encoding, non-UTF-8 bytes are a 22021, not an internal error.
pub fn utf8<'a>(arg: &'static str, bytes: Option<&'a [u8]>) -> Result<Option<&'a str>, JobError> {
    bytes
        .map(|b| std::str::from_utf8(b).map_err(|_| JobError::NotUtf8(arg)))
        .transpose()
}

/// Text argument `n` of a hand-declared function, as UTF-8 (`name` is for
/// the error message).
///
/// # Safety
/// `fcinfo` must be the current call's, and argument `n` of type text.
pub unsafe fn arg<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    name: &'static str,
    n: usize,
) -> Result<Option<&'a str>, JobError> {
    // SAFETY: per this function's contract; a text datum is read as its bytes.
    utf8(name, unsafe {
        pgrx::fcinfo::pg_getarg_datum(fcinfo, n).map(|datum| bytes(datum))
    })
}
