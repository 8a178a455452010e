//! The OID of `apollo_jobs.jobs`, kept per backend and confirmed under a lock.
//!
//! Why kept: resolving the name costs two syscache lookups (schema, then
//! relation), about 3% of the hot path. The OID is forgotten on every
//! invalidation of pg_class's name cache or of pg_namespace (any relation
//! created, dropped, renamed or moved; any schema renamed or dropped; a
//! cache reset).
//!
//! Why confirmed under a lock: an OID read before the lock is taken may
//! already be stale (a table swapped or a REINDEX CONCURRENTLY committed
//! since this backend last processed invalidations). Taking the lock
//! processes pending invalidations, so `locked_jobs` locks the kept OID and
//! then checks that it is still kept; if an invalidation arrived it looks the
//! name up again, the same retry PostgreSQL's `RangeVarGetRelidExtended`
//! does. Once a lock is held, no DDL can rename or drop the table until this
//! transaction ends.
//!
//! Why the schema's USAGE is checked here: a kept plan and the probe both
//! skip the name lookup that would check it, so a caller reaching the
//! functions through a view could otherwise read the table without it. The
//! answer is kept per role until schemas or role memberships change.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::{pg_guard, pg_sys};

use crate::compat;

thread_local! {
    /// `None`: not looked up since the last invalidation; `Some(None)`: no such relation.
    static KEPT: Cell<Option<Option<pg_sys::Oid>>> = const { Cell::new(None) };
    /// The role last found to have USAGE on the schema, until the next
    /// invalidation of schemas or role memberships.
    static USAGE_CHECKED_FOR: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

/// Lookups before giving up on a name that keeps changing under us.
const ATTEMPTS: usize = 8;

/// `apollo_jobs.jobs`, locked in AccessShareLock for the rest of the
/// transaction; `None` when there is no such table. A caller without USAGE
/// on the schema gets PostgreSQL's own 42501, whichever path (a kept plan or
/// the probe, neither of which looks the schema up again) answers next.
pub fn locked_jobs() -> Option<pg_sys::Oid> {
    register_callbacks();
    require_schema_usage();
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    let mut oid = None;
    for _ in 0..ATTEMPTS {
        let relid = match KEPT.with(Cell::get) {
            Some(Some(kept)) => kept,
            // Not found, or not looked up yet. A "not found" is never taken
            // from the cache: the table may have been created (or renamed
            // back) by a transaction that committed since this one last
            // processed invalidations, so process them and look again, as
            // PostgreSQL's own name lookups do.
            _ => {
                // SAFETY: processes pending invalidations; the callbacks only touch thread-locals.
                unsafe { pg_sys::AcceptInvalidationMessages() };
                let found = relation_oid(c"jobs");
                KEPT.with(|kept| kept.set(Some(found)));
                found?
            }
        };
        // SAFETY: locking an OID is valid whether or not the relation still
        // exists; acquiring the lock processes pending invalidations.
        unsafe { pg_sys::LockRelationOid(relid, lock) };
        if KEPT.with(Cell::get) == Some(Some(relid)) {
            return Some(relid);
        }
        // The name moved while we waited: let go and look again.
        // SAFETY: releases the lock just taken (locks are counted).
        unsafe { pg_sys::UnlockRelationOid(relid, lock) };
        oid = Some(relid);
    }
    // Invalidations kept arriving: answer as a plain lookup under the lock would.
    let relid = relation_oid(c"jobs").or(oid)?;
    // SAFETY: as above.
    unsafe { pg_sys::LockRelationOid(relid, lock) };
    relation_oid(c"jobs").filter(|now| *now == relid)
}

/// OID of `apollo_jobs.<relation>`, from the syscache (no SQL, no locks).
pub fn relation_oid(relation: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: both lookups take NUL-terminated names and only read the catalog caches.
    let oid = unsafe {
        let namespace = pg_sys::get_namespace_oid(c"apollo_jobs".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return None;
        }
        pg_sys::get_relname_relid(relation.as_ptr(), namespace)
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

fn require_schema_usage() {
    // SAFETY: catalog reads; aclcheck_error raises (it does not return) when
    // the check failed.
    unsafe {
        let user = pg_sys::GetUserId();
        if USAGE_CHECKED_FOR.with(Cell::get) == Some(user) {
            return;
        }
        let namespace = pg_sys::get_namespace_oid(c"apollo_jobs".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return;
        }
        let result =
            compat::namespace_aclcheck(namespace, user, pg_sys::ACL_USAGE as pg_sys::AclMode);
        if result != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                result,
                pg_sys::ObjectType::OBJECT_SCHEMA,
                c"apollo_jobs".as_ptr(),
            );
        }
        USAGE_CHECKED_FOR.with(|checked| checked.set(Some(user)));
    }
}

fn register_callbacks() {
    if CALLBACKS.with(Cell::get) {
        return;
    }
    // SAFETY: registered once per backend (the server allows a fixed number
    // of callbacks, so never more); the callback only clears a thread-local.
    unsafe {
        for cache in [
            pg_sys::SysCacheIdentifier::RELNAMENSP,
            pg_sys::SysCacheIdentifier::NAMESPACEOID,
            pg_sys::SysCacheIdentifier::AUTHMEMMEMROLE,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(forget),
                pg_sys::Datum::from(0usize),
            );
        }
    }
    CALLBACKS.with(|registered| registered.set(true));
}

#[pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    KEPT.with(|kept| kept.set(None));
    USAGE_CHECKED_FOR.with(|checked| checked.set(None));
}
