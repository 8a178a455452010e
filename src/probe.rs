//! The hot path's lookup: one probe of the unique index on `thermos_job_id`,
//! without the executor.
//!
//! Why: the re-post of a known workflow (the API's 409) is the common call,
//! and through SPI its cost is dominated not by the index probe but by
//! starting and stopping an executor around it. Here the probe is what
//! `nodeIndexscan.c` does for the same plan: take the snapshot a mutating
//! SPI statement would take (after a CommandCounterIncrement, so earlier
//! calls in the same statement are seen), scan with one equality key, and
//! read the row. Index and heap access methods take the SERIALIZABLE
//! predicate locks themselves.
//!
//! Why it declines: the probe answers only when its answer is provably the
//! SQL path's. With the table locked (so every invalidation has been
//! processed and the relcache entries are current) it checks every
//! assumption it makes, and returns `None` — run the SQL — when any is off:
//! `apollo_jobs.enable_probe` is on; the caller holds table-level SELECT and
//! row-level security is off for the caller; the table is an ordinary heap
//! table with no inheritance children or partitions, not an unlogged table
//! read during recovery; the six columns exist as text (`job_id` may be a
//! domain over text); and the index is a live, valid, ready, immediate,
//! unique btree on `thermos_job_id` alone, without expressions or predicate,
//! with the column's own deterministic collation and text operators. Any
//! other shape is left to the SQL path, which plans around it, raises 42501,
//! applies policies or reads child tables exactly as any query would.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys;

use crate::args::Registration;
use crate::compat;
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

/// What a lookup found for a thermos id.
pub enum Probed {
    /// A row whose class, scope and job type equal the registration's: its id's bytes.
    Same(Vec<u8>),
    /// A row registered with other attributes.
    Different,
    /// No row visible to this snapshot.
    Missing,
}

thread_local! {
    /// The (table, index) pair the probe last used; re-checked on every call.
    static KEPT_INDEX: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
}

/// Probe outcomes in test builds: (answered, declined).
#[cfg(any(test, feature = "pg_test"))]
pub mod counters {
    use std::cell::Cell;
    thread_local! {
        pub static ANSWERED: Cell<i64> = const { Cell::new(0) };
        pub static DECLINED: Cell<i64> = const { Cell::new(0) };
    }
}

/// Looks `reg.thermos_job_id` up in `table`. `None` means "not answerable
/// here": use the SQL path.
///
/// # Safety
/// Must run inside a transaction in a backend, with `table` locked in at
/// least AccessShareLock by this transaction (see `oids::locked_jobs`).
pub unsafe fn lookup(table: pg_sys::Oid, reg: &Registration<'_>) -> Option<Probed> {
    // SAFETY: per this function's contract.
    let result = crate::guc::probe_enabled()
        .then(|| unsafe { lookup_locked(table, reg, Snap::Statement) })
        .flatten();
    #[cfg(any(test, feature = "pg_test"))]
    {
        let counter = if result.is_some() {
            &counters::ANSWERED
        } else {
            &counters::DECLINED
        };
        counter.with(|c| c.set(c.get() + 1));
    }
    result
}

/// Which snapshot a scan reads with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Snap {
    /// What a mutating SQL statement would see now (the lookup).
    Statement,
    /// The same snapshot, but ignoring the caller's privileges and policies
    /// (classifying a unique violation; no data is returned).
    Transaction,
    /// Everything committed so far, whatever this transaction's snapshot
    /// (classifying a unique violation; no data is returned).
    Latest,
}

/// Who holds a thermos id that a unique violation reported but the SQL
/// lookup could not see.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Holder {
    /// No committed row holds it: another unique index refused the row.
    Nobody,
    /// A row this transaction's snapshot sees, hidden by row-level security.
    HiddenByPolicy,
    /// A row committed after this transaction's snapshot was taken.
    AfterSnapshot,
}

/// Classifies a unique violation the SQL lookup could not explain, by
/// reading the thermos index directly — first with the latest snapshot
/// (is the id held at all?), then with this transaction's (can the caller's
/// snapshot see the row, so that only a policy hides it?). Nothing of the
/// row is returned. `None` when no index can be read directly (see the
/// module doc; inheritance children are fine here: the INSERT went into the
/// parent, so its violation came from the parent's indexes).
///
/// # Safety
/// As `lookup`.
pub unsafe fn holder(table: pg_sys::Oid, reg: &Registration<'_>) -> Option<Holder> {
    // SAFETY: per this function's contract.
    unsafe {
        let latest = lookup_locked(table, reg, Snap::Latest)?;
        if matches!(latest, Probed::Missing) {
            return Some(Holder::Nobody);
        }
        let mine = lookup_locked(table, reg, Snap::Transaction)?;
        Some(if matches!(mine, Probed::Missing) {
            Holder::AfterSnapshot
        } else {
            Holder::HiddenByPolicy
        })
    }
}

/// # Safety
/// As `lookup`.
unsafe fn lookup_locked(table: pg_sys::Oid, reg: &Registration<'_>, snap: Snap) -> Option<Probed> {
    // SAFETY: plain catalog checks on a locked relation; the relation is
    // opened without a further lock (the caller's lock is held to the end of
    // the transaction) and closed on every path that does not raise. An
    // ERROR raised in between (e.g. an I/O error) releases the relcache
    // reference, the scan, the slot and the snapshot through (sub)transaction
    // abort, as for any executor node.
    unsafe {
        if snap == Snap::Statement
            && (pg_sys::pg_class_aclcheck(
                table,
                pg_sys::GetUserId(),
                pg_sys::ACL_SELECT as pg_sys::AclMode,
            ) != pg_sys::AclResult::ACLCHECK_OK
                || pg_sys::check_enable_rls(table, pg_sys::InvalidOid, true)
                    == pg_sys::CheckEnableRlsResult::RLS_ENABLED as core::ffi::c_int)
        {
            return None;
        }
        let heap = pg_sys::table_open(table, pg_sys::NoLock as pg_sys::LOCKMODE);
        let result = if table_fits(heap, snap == Snap::Statement) {
            attnums(heap).and_then(|cols| {
                let idx = open_index(heap, table, &cols)?;
                let found = scan(heap, idx, &cols.attnums, reg, snap);
                // Locks are kept to the end of the transaction, as the executor does.
                pg_sys::relation_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
                Some(found)
            })
        } else {
            None
        };
        pg_sys::table_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        result
    }
}

/// True iff `heap` is an ordinary heap table the probe may read; with
/// `whole_table`, also without inheritance children (whose rows a lookup
/// of the SQL path would see).
///
/// # Safety
/// `heap` must be an open relation.
unsafe fn table_fits(heap: pg_sys::Relation, whole_table: bool) -> bool {
    // SAFETY: reads the open relation's pg_class row.
    unsafe {
        let rel = &*(*heap).rd_rel;
        rel.relkind as u8 == pg_sys::RELKIND_RELATION
            && !(whole_table && rel.relhassubclass)
            && rel.relam == pg_sys::HEAP_TABLE_AM_OID
            && !(rel.relpersistence as u8 == pg_sys::RELPERSISTENCE_UNLOGGED
                && pg_sys::RecoveryInProgress())
    }
}

/// The probe's view of the table's columns.
struct Columns {
    /// Attribute numbers of `COLUMNS`.
    attnums: [i16; 6],
    /// Collation of `thermos_job_id`.
    thermos_collation: pg_sys::Oid,
}

/// Attribute numbers of `COLUMNS` in the table's descriptor, if every column
/// is text (`job_id`: text or a domain over it).
///
/// # Safety
/// `heap` must be an open relation.
unsafe fn attnums(heap: pg_sys::Relation) -> Option<Columns> {
    // SAFETY: reads the open relation's tuple descriptor, natts entries long.
    unsafe {
        let desc = (*heap).rd_att;
        let attrs = compat::tuple_desc_attrs(desc);
        let mut found = [0i16; 6];
        let mut thermos_collation = pg_sys::InvalidOid;
        for (slot, name) in found.iter_mut().zip(COLUMNS) {
            let attr = attrs
                .iter()
                .find(|a| !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()) == name)?;
            let is_text = if name == c"job_id" {
                attr.atttypid == pg_sys::TEXTOID
                    || pg_sys::getBaseType(attr.atttypid) == pg_sys::TEXTOID
            } else {
                attr.atttypid == pg_sys::TEXTOID
            };
            if !is_text || attr.attlen != -1 {
                return None;
            }
            if name == c"thermos_job_id" {
                thermos_collation = attr.attcollation;
            }
            *slot = attr.attnum;
        }
        Some(Columns {
            attnums: found,
            thermos_collation,
        })
    }
}

/// Opens (AccessShareLock) the unique index the probe can use, preferring
/// the one used last time; `None` when the table has no such index.
///
/// # Safety
/// `heap` must be the open, locked relation `table`.
unsafe fn open_index(
    heap: pg_sys::Relation,
    table: pg_sys::Oid,
    cols: &Columns,
) -> Option<pg_sys::Relation> {
    // SAFETY: the index list is read from the locked table's current relcache
    // entry; each candidate is opened with try_relation_open, which returns
    // NULL for an index dropped concurrently (DROP INDEX CONCURRENTLY does
    // not conflict with our lock), and checked before use.
    unsafe {
        let indexes = index_oids(heap);
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let try_one = |oid: pg_sys::Oid| -> Option<pg_sys::Relation> {
            let idx = pg_sys::try_relation_open(oid, lock);
            if idx.is_null() {
                return None;
            }
            if index_fits(idx, table, cols) {
                Some(idx)
            } else {
                pg_sys::relation_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
                None
            }
        };
        let mut chosen = None;
        if let Some((kept_table, kept_index)) = KEPT_INDEX.with(Cell::get) {
            if kept_table == table && indexes.contains(&kept_index) {
                chosen = try_one(kept_index);
            }
        }
        if chosen.is_none() {
            for &oid in &indexes {
                if let Some(idx) = try_one(oid) {
                    KEPT_INDEX.with(|kept| kept.set(Some((table, oid))));
                    chosen = Some(idx);
                    break;
                }
            }
        }
        chosen
    }
}

/// The OIDs of `heap`'s indexes, from its current relcache entry.
///
/// # Safety
/// `heap` must be an open relation locked by this transaction (so that the
/// entry reflects every committed index change).
pub unsafe fn index_oids(heap: pg_sys::Relation) -> Vec<pg_sys::Oid> {
    // SAFETY: RelationGetIndexList returns a fresh copy (NIL for none) of
    // `length` OID cells, freed here after they are read.
    unsafe {
        let list = pg_sys::RelationGetIndexList(heap);
        if list.is_null() {
            return Vec::new();
        }
        let oids = (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).oid_value)
            .collect();
        pg_sys::list_free(list);
        oids
    }
}

/// True iff `idx` is a usable unique btree text index on `thermos_job_id` alone,
/// with that column's own deterministic collation.
///
/// # Safety
/// `idx` must be an open relation.
unsafe fn index_fits(idx: pg_sys::Relation, table: pg_sys::Oid, cols: &Columns) -> bool {
    // SAFETY: reads the open index's relcache entry; rd_index and the
    // per-column arrays exist for every index relation and have at least
    // one entry.
    unsafe {
        let form = (*idx).rd_index;
        (*(*idx).rd_rel).relkind as u8 == pg_sys::RELKIND_INDEX
            && !form.is_null()
            && (*form).indrelid == table
            && (*form).indisunique
            && (*form).indimmediate
            && (*form).indisvalid
            && (*form).indisready
            && (*form).indislive
            && usable_by_this_transaction(idx)
            && (*form).indnkeyatts == 1
            && (*form).indkey.values.as_slice(1)[0] == cols.attnums[5]
            && (*(*idx).rd_rel).relam == pg_sys::BTREE_AM_OID
            && *(*idx).rd_opfamily == pg_sys::TEXT_BTREE_FAM_OID
            // rd_indexprs/rd_indpred are loaded lazily: ask the pg_index row.
            && pg_sys::heap_attisnull(
                (*idx).rd_indextuple,
                pg_sys::Anum_pg_index_indexprs as i32,
                std::ptr::null_mut(),
            )
            && pg_sys::heap_attisnull(
                (*idx).rd_indextuple,
                pg_sys::Anum_pg_index_indpred as i32,
                std::ptr::null_mut(),
            )
            && *(*idx).rd_indcollation == cols.thermos_collation
            && deterministic(cols.thermos_collation)
    }
}

/// False for an index built over broken HOT chains (`indcheckxmin`) that
/// this transaction's snapshot may not use yet — the planner's rule
/// (`get_relation_info`): until the index's own pg_index row is older than
/// every snapshot of this transaction, it may lack versions they see.
///
/// # Safety
/// `idx` must be an open index relation.
unsafe fn usable_by_this_transaction(idx: pg_sys::Relation) -> bool {
    // SAFETY: rd_index and rd_indextuple are set for every open index; the
    // tuple header is the pg_index row's, read only.
    unsafe {
        if !(*(*idx).rd_index).indcheckxmin {
            return true;
        }
        let header = (*(*idx).rd_indextuple).t_data;
        let infomask = (*header).t_infomask as u32;
        let frozen = infomask & pg_sys::HEAP_XMIN_FROZEN == pg_sys::HEAP_XMIN_FROZEN;
        let xmin = (*header).t_choice.t_heap.t_xmin;
        frozen || pg_sys::TransactionIdPrecedes(xmin, pg_sys::TransactionXmin)
    }
}

/// True iff equality under `collation` is byte equality. The database's
/// default collation and "C" always are (PostgreSQL refuses a
/// nondeterministic default), which spares the syscache lookup on the hot
/// path.
fn deterministic(collation: pg_sys::Oid) -> bool {
    collation == pg_sys::DEFAULT_COLLATION_OID
        || collation == pg_sys::C_COLLATION_OID
        // SAFETY: a syscache read of a collation OID taken from a live index.
        || (collation != pg_sys::InvalidOid && unsafe { pg_sys::get_collation_isdeterministic(collation) })
}

/// # Safety
/// `heap` and `idx` must be open, `cols` their attribute numbers.
unsafe fn scan(
    heap: pg_sys::Relation,
    idx: pg_sys::Relation,
    cols: &[i16; 6],
    reg: &Registration<'_>,
    snap: Snap,
) -> Probed {
    // SAFETY: the scan, slot and snapshot are created and released here in
    // order; slot values are read only for attributes up to `max`, which
    // `slot_getsomeattrs_int` has deformed; text values are read in place
    // while the slot still holds the tuple.
    unsafe {
        // What SPI does before a mutating statement: make this transaction's
        // earlier writes visible, then take the statement's snapshot.
        match snap {
            Snap::Statement | Snap::Transaction => {
                pg_sys::CommandCounterIncrement();
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            // PushActiveSnapshot copies the static latest snapshot.
            Snap::Latest => pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()),
        }
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

        let desc = compat::index_beginscan(heap, idx, snapshot, 1, 0);
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
                (true, Some(id)) => Probed::Same(id.to_vec()),
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
