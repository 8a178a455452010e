//! The differences between the PostgreSQL majors this crate builds for (15,
//! 16, 17, 18; Cargo features `pg15`…`pg18`), in one place. Everything else
//! in the crate is the same source for every major.

use pgrx::pg_sys;

/// The `natts` attributes of a tuple descriptor, in order.
///
/// PostgreSQL 18 put an array of `CompactAttribute`s first in
/// `TupleDescData` (`compact_attrs`) with the `FormData_pg_attribute`s after
/// it, reached through `TupleDescAttr`; before 18 they are `attrs` itself.
///
/// # Safety
/// `desc` must be a valid tuple descriptor that outlives the returned slice.
pub unsafe fn tuple_desc_attrs<'a>(desc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    // SAFETY: `desc` is valid per this function's contract; its attribute
    // array holds `natts` entries, contiguous on every major (on 18,
    // `TupleDescAttr(desc, 0)` is the first of them, right after the
    // compact attributes).
    unsafe {
        let n = usize::try_from((*desc).natts).unwrap_or(0);
        if n == 0 {
            return &[];
        }
        #[cfg(feature = "pg18")]
        let first = pg_sys::TupleDescAttr(desc, 0).cast_const();
        #[cfg(not(feature = "pg18"))]
        let first = (*desc).attrs.as_ptr();
        std::slice::from_raw_parts(first, n)
    }
}

/// `index_beginscan` without scan instrumentation (PostgreSQL 18 added an
/// `IndexScanInstrumentation *` argument; NULL is what core passes when
/// nobody asked for EXPLAIN ANALYZE counts).
///
/// # Safety
/// As `index_beginscan`: `heap` and `idx` open and locked, `snapshot` valid.
pub unsafe fn index_beginscan(
    heap: pg_sys::Relation,
    idx: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    // SAFETY: the caller's contract is `index_beginscan`'s.
    unsafe {
        #[cfg(feature = "pg18")]
        {
            pg_sys::index_beginscan(heap, idx, snapshot, std::ptr::null_mut(), nkeys, norderbys)
        }
        #[cfg(not(feature = "pg18"))]
        {
            pg_sys::index_beginscan(heap, idx, snapshot, nkeys, norderbys)
        }
    }
}

/// The caller's privileges on a schema. PostgreSQL 16 replaced
/// `pg_namespace_aclcheck` with the generic `object_aclcheck`.
///
/// # Safety
/// Inside a transaction (reads the catalogs).
pub unsafe fn namespace_aclcheck(
    namespace: pg_sys::Oid,
    user: pg_sys::Oid,
    mode: pg_sys::AclMode,
) -> pg_sys::AclResult::Type {
    // SAFETY: a catalog read, per this function's contract.
    unsafe {
        #[cfg(feature = "pg15")]
        {
            pg_sys::pg_namespace_aclcheck(namespace, user, mode)
        }
        #[cfg(not(feature = "pg15"))]
        {
            pg_sys::object_aclcheck(pg_sys::NamespaceRelationId, namespace, user, mode)
        }
    }
}
