//! The hot path's lookup: one probe of the unique index on `thermos_job_id`,
//! without the executor.
//!
//! Why: the re-post of a known workflow (the API's 409) is the common call,
//! and through SPI its cost is dominated not by the index probe but by
//! starting and stopping an executor around it. Here the probe is what
//! `nodeIndexscan.c` does for the same plan: open the table and index, take
//! the snapshot a mutating SPI statement would take (after a
//! CommandCounterIncrement, so earlier calls in the same statement are seen),
//! scan with one equality key, and read the row. Index and heap access
//! methods take the SERIALIZABLE predicate locks themselves.
//!
//! Why it can decline: whatever the SQL path would do differently is left to
//! the SQL path. The probe answers only when the caller holds table-level
//! SELECT, row-level security is off for the caller, and the index is still
//! the valid, unique, single-column btree text index on `thermos_job_id`
//! that `create_jobs_table()` made. Otherwise it returns `None` and the
//! caller runs the kept SPI plan, which raises 42501, applies policies, or
//! plans around a changed schema exactly as any query would.

use std::ffi::CStr;

use pgrx::pg_sys;

use crate::args::Registration;
use crate::text;

/// Columns the probe reads, by name (attribute numbers are looked up in the
/// table's current descriptor, so a rewritten table cannot mislead it).
const COLUMNS: [&CStr; 6] = [
    c"job_id",
    c"job_class",
    c"org_id",
    c"project_id",
    c"job_type",
    c"thermos_job_id",
];

/// What a probe found for a thermos id.
pub enum Probed {
    /// A row whose class, scope and job type equal the registration's: its id.
    Same(String),
    /// A row registered with other attributes.
    Different,
    /// No row visible to this snapshot.
    Missing,
}

/// Looks `reg.thermos_job_id` up in `table` through `index`. `None` means
/// "not answerable here": use the SQL path.
///
/// # Safety
/// Must run inside a transaction in a backend, with `table` and `index`
/// OIDs from the catalog (they are re-validated after locking).
pub unsafe fn lookup(
    table: pg_sys::Oid,
    index: pg_sys::Oid,
    reg: &Registration<'_>,
) -> Option<Probed> {
    unsafe {
        if pg_sys::pg_class_aclcheck(
            table,
            pg_sys::GetUserId(),
            pg_sys::ACL_SELECT as pg_sys::AclMode,
        ) != pg_sys::AclResult::ACLCHECK_OK
            || pg_sys::check_enable_rls(table, pg_sys::InvalidOid, true)
                == pg_sys::CheckEnableRlsResult::RLS_ENABLED as core::ffi::c_int
        {
            return None;
        }
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let heap = pg_sys::table_open(table, lock);
        let idx = pg_sys::index_open(index, lock);
        let result = attnums(heap)
            .filter(|cols| index_fits(idx, table, cols[5]))
            .map(|cols| scan(heap, idx, &cols, reg));
        // Locks are kept to the end of the transaction, as the executor does.
        pg_sys::index_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        result
    }
}

/// Attribute numbers of `COLUMNS` in the table's descriptor.
unsafe fn attnums(heap: pg_sys::Relation) -> Option<[i16; 6]> {
    unsafe {
        let desc = (*heap).rd_att;
        let natts = (*desc).natts as usize;
        let attrs = (*desc).attrs.as_slice(natts);
        let mut found = [0i16; 6];
        for (slot, name) in found.iter_mut().zip(COLUMNS) {
            let attr = attrs
                .iter()
                .find(|a| !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()) == name)?;
            if attr.atttypid != pg_sys::TEXTOID && name != c"job_id" {
                return None;
            }
            *slot = attr.attnum;
        }
        Some(found)
    }
}

/// True iff `idx` is the valid unique btree text index on `thermos_job_id` alone.
unsafe fn index_fits(idx: pg_sys::Relation, table: pg_sys::Oid, thermos_attnum: i16) -> bool {
    unsafe {
        let form = (*idx).rd_index;
        !form.is_null()
            && (*form).indrelid == table
            && (*form).indisunique
            && (*form).indisvalid
            && (*form).indnkeyatts == 1
            && (*form).indkey.values.as_slice(1)[0] == thermos_attnum
            && (*(*idx).rd_rel).relam == pg_sys::BTREE_AM_OID
            && *(*idx).rd_opfamily == pg_sys::TEXT_BTREE_FAM_OID
            && (*idx).rd_indexprs.is_null()
            && (*idx).rd_indpred.is_null()
    }
}

unsafe fn scan(
    heap: pg_sys::Relation,
    idx: pg_sys::Relation,
    cols: &[i16; 6],
    reg: &Registration<'_>,
) -> Probed {
    unsafe {
        // What SPI does before a mutating statement: make this transaction's
        // earlier writes visible, then take the statement's snapshot.
        pg_sys::CommandCounterIncrement();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let snapshot = pg_sys::GetActiveSnapshot();

        let key_text = pgrx::varlena::rust_str_to_text_p(reg.thermos_job_id);
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_TEXTEQ),
            pg_sys::Datum::from(key_text.as_ptr().cast::<core::ffi::c_void>()),
        );
        key.sk_collation = *(*idx).rd_indcollation;

        let desc = pg_sys::index_beginscan(heap, idx, snapshot, 1, 0);
        pg_sys::index_rescan(desc, &mut key, 1, std::ptr::null_mut(), 0);
        let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
        let found = if pg_sys::index_getnext_slot(
            desc,
            pg_sys::ScanDirection::ForwardScanDirection,
            slot,
        ) {
            let max = cols.iter().copied().max().unwrap_or(0);
            pg_sys::slot_getsomeattrs_int(slot, max as i32);
            let value = |attnum: i16| -> Option<&[u8]> {
                let i = (attnum - 1) as usize;
                if *(*slot).tts_isnull.add(i) {
                    None
                } else {
                    Some(text::bytes(*(*slot).tts_values.add(i)))
                }
            };
            let same = value(cols[1]) == Some(reg.job_class.as_str().as_bytes())
                && value(cols[2]) == Some(reg.org_id.as_bytes())
                && value(cols[3]) == reg.project_id.map(str::as_bytes)
                && value(cols[4]) == Some(reg.job_type.as_bytes());
            match (same, value(cols[0])) {
                (true, Some(id)) => Probed::Same(String::from_utf8_lossy(id).into_owned()),
                _ => Probed::Different,
            }
        } else {
            Probed::Missing
        };
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(desc);
        pg_sys::PopActiveSnapshot();
        found
    }
}
