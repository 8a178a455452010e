//! Settings, and what the library does when it is loaded.
//!
//! Why a switch for the probe: the direct index probe (`probe.rs`) is a fast
//! path that must always give the SQL path's answer. `apollo_jobs.enable_probe
//! = off` takes it out of the picture, for a DBA who wants to rule it out and
//! for the tests that compare both paths call for call.
//!
//! Why the backtrace setting: pgrx captures a Rust backtrace with every error
//! it reports and puts it in the error's DETAIL when the server's environment
//! enables backtraces (`RUST_BACKTRACE`). Clients must never see the
//! library's internals, so backtraces are switched off for this process.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static ENABLE_PROBE: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Registers the settings and disables Rust backtraces. Called once per
/// process, from `_PG_init`.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"apollo_jobs.enable_probe",
        c"Lets upsert_job_by_thermos_id look the thermos id up with a direct index probe.",
        c"When off, every lookup runs as SQL. Both give the same answers; the probe is faster \
          and declines by itself whenever the table is not as create_jobs_table() made it.",
        &ENABLE_PROBE,
        GucContext::Userset,
        GucFlags::default(),
    );
    // `RUST_LIB_BACKTRACE` takes precedence over `RUST_BACKTRACE` for
    // `std::backtrace::Backtrace::capture`, which reads it on first use.
    // SAFETY: a backend runs one thread; nothing reads the environment concurrently.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
}

/// `apollo_jobs.enable_probe`.
pub fn probe_enabled() -> bool {
    ENABLE_PROBE.get()
}
