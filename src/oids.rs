//! OIDs of the extension's relations, looked up once per backend.
//!
//! Why: each call of the upsert or the getter needs the OIDs of
//! `apollo_jobs.jobs`, its thermos index or `apollo_jobs.visible_jobs`.
//! Two syscache lookups per name (schema, then relation) were about 3% of
//! the hot path's instructions. They are kept here and forgotten on every
//! invalidation of pg_class's name cache or of pg_namespace (any relation
//! created, dropped, renamed or moved; any schema renamed or dropped; a
//! cache reset). Invalidations are processed at the same points a fresh
//! lookup would see them (transaction start, lock acquisition, command
//! boundaries), so a kept OID is always what a lookup would return now; the
//! callers still open each relation under a lock and check what they find.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::{pg_guard, pg_sys};

/// The relations, as of the last lookup (`None`: no such relation).
#[derive(Clone, Copy)]
pub struct Oids {
    pub jobs: Option<pg_sys::Oid>,
    pub thermos_index: Option<pg_sys::Oid>,
    pub visible_jobs: Option<pg_sys::Oid>,
}

thread_local! {
    static KEPT: Cell<Option<Oids>> = const { Cell::new(None) };
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

/// The current OIDs, from the kept copy or fresh from the syscache.
pub fn get() -> Oids {
    if let Some(oids) = KEPT.with(Cell::get) {
        return oids;
    }
    register_callbacks();
    let oids = Oids {
        jobs: relation_oid(c"jobs"),
        thermos_index: relation_oid(c"jobs_thermos_job_id_key"),
        visible_jobs: relation_oid(c"visible_jobs"),
    };
    KEPT.with(|kept| kept.set(Some(oids)));
    oids
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
}
