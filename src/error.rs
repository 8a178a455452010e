//! The SQL form of the JobError namespace: every failure the extension itself
//! raises, with its SQLSTATE, message, detail and hint in one place.
//!
//! Why one enum: the README's error table, the tests that assert SQLSTATEs and
//! the code that raises must agree; keeping the mapping here makes a drift
//! visible in one diff. Messages follow PostgreSQL style (lowercase, no final
//! period; DETAIL and HINT are sentences). Caller input echoed back is
//! truncated, and nothing here ever names another tenant's job, org or
//! project.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Longest echo of caller input in a message, in characters.
const ECHO_CHARS: usize = 48;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// 22004: a required argument is NULL.
    NullArgument(&'static str),
    /// 22021: a text argument is not valid UTF-8 (only in non-UTF-8 databases).
    NotUtf8(&'static str),
    /// 22023: a required text argument is the empty string.
    EmptyArgument(&'static str),
    /// 22023: a text argument exceeds its byte limit.
    ArgumentTooLong {
        arg: &'static str,
        limit: usize,
        actual: usize,
    },
    /// 22023: `job_class` is neither `'org'` nor `'project'`.
    UnknownJobClass(String),
    /// 22023: an org job was given a project_id.
    ProjectIdForOrgJob,
    /// 22023: a project job was given no project_id.
    ProjectIdMissing,
    /// 22023: `job_type` does not match `^[a-z][a-z0-9_]{0,62}$`.
    InvalidJobType(String),
    /// 22P02: text that is not a job id where one is required.
    MalformedJobId(String),
    /// 23505: the thermos job id is registered with other attributes.
    ThermosIdTaken,
    /// 40001: a concurrent registration this snapshot cannot see.
    ConcurrentRegistration,
    /// 55000: `create_jobs_table()` has not been run.
    JobsTableMissing,
    /// 42P07: `create_jobs_table()` was already run.
    JobsTableExists,
    /// 55000: the library is newer than the installed SQL objects
    /// (`ALTER EXTENSION apollo_jobs UPDATE` has not been run).
    ExtensionNotUpdated,
    /// 42P01: a relation OID passed as regclass does not exist.
    NoSuchRelation(u32),
    /// 42703: a named key or soft-delete column is missing.
    NoSuchColumn { table: String, column: String },
    /// 42804: a scope's key column is not text or varchar.
    KeyNotText { table: String, column: String },
    /// 42804: a soft-delete column is neither boolean nor a timestamp or date.
    NotSoftDelete { table: String, column: String },
    /// 55000: a scope binding no longer matches the host table (host DDL).
    BindingBroken { scope: &'static str, why: String },
    /// 25006: a write (registration, DDL, binding) in a read-only transaction or on a standby.
    ReadOnly(&'static str),
    /// 27000: a trigger or rule on apollo_jobs.jobs suppressed the registration's INSERT.
    RegistrationSuppressed,
    /// 27000: a trigger or rule on apollo_jobs.jobs changed the registration's row.
    RegistrationAltered,
    /// 0A000: an UPDATE of apollo_jobs.jobs (registrations are immutable).
    Immutable,
    /// 22023: `page_size` outside 1..=1000.
    PageSize(i32),
    /// 22023: `include_project_jobs` together with a `project_id`.
    ProjectJobsWithProject,
    /// 22023: `starting_after` is not a job of this listing (malformed, unknown or elsewhere).
    InvalidCursor,
    /// 58000: the OS random source failed.
    EntropyUnavailable(String),
    /// XX000: an invariant of the extension itself broke (a bug).
    Internal(String),
}

impl JobError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::NotUtf8(_) => ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            Self::EmptyArgument(_)
            | Self::ArgumentTooLong { .. }
            | Self::UnknownJobClass(_)
            | Self::ProjectIdForOrgJob
            | Self::ProjectIdMissing
            | Self::InvalidJobType(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::MalformedJobId(_) => ERRCODE_INVALID_TEXT_REPRESENTATION,
            Self::ThermosIdTaken => ERRCODE_UNIQUE_VIOLATION,
            Self::ConcurrentRegistration => ERRCODE_T_R_SERIALIZATION_FAILURE,
            Self::JobsTableMissing => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::JobsTableExists => ERRCODE_DUPLICATE_TABLE,
            Self::ExtensionNotUpdated => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::NoSuchRelation(_) => ERRCODE_UNDEFINED_TABLE,
            Self::NoSuchColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            Self::KeyNotText { .. } | Self::NotSoftDelete { .. } => ERRCODE_DATATYPE_MISMATCH,
            Self::BindingBroken { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::ReadOnly(_) => ERRCODE_READ_ONLY_SQL_TRANSACTION,
            Self::RegistrationSuppressed | Self::RegistrationAltered => {
                ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION
            }
            Self::Immutable => ERRCODE_FEATURE_NOT_SUPPORTED,
            Self::PageSize(_) | Self::ProjectJobsWithProject | Self::InvalidCursor => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            Self::EntropyUnavailable(_) => ERRCODE_SYSTEM_ERROR,
            Self::Internal(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::NullArgument(arg) => format!("argument \"{arg}\" must not be null"),
            Self::NotUtf8(arg) => format!("argument \"{arg}\" is not valid UTF-8"),
            Self::EmptyArgument(arg) => format!("argument \"{arg}\" must not be empty"),
            Self::ArgumentTooLong { arg, .. } => format!("argument \"{arg}\" is too long"),
            Self::UnknownJobClass(got) => format!("invalid job_class: \"{}\"", echo(got)),
            Self::ProjectIdForOrgJob => "project_id must be null for an org job".into(),
            Self::ProjectIdMissing => "project_id is required for a project job".into(),
            Self::InvalidJobType(got) => format!("invalid job_type: \"{}\"", echo(got)),
            Self::MalformedJobId(got) => format!("invalid job id: \"{}\"", echo(got)),
            Self::ThermosIdTaken => {
                "thermos_job_id is already registered for a different job".into()
            }
            Self::ConcurrentRegistration => {
                "could not serialize access due to a concurrent registration of the same \
                 thermos_job_id"
                    .into()
            }
            Self::JobsTableMissing => "relation \"apollo_jobs.jobs\" has not been created".into(),
            Self::JobsTableExists => "relation \"apollo_jobs.jobs\" already exists".into(),
            Self::ExtensionNotUpdated => {
                "extension \"apollo_jobs\" is installed at an older version than its library".into()
            }
            Self::NoSuchRelation(oid) => format!("relation with OID {oid} does not exist"),
            Self::NoSuchColumn { table, column } => {
                format!("column \"{column}\" of relation \"{table}\" does not exist")
            }
            Self::KeyNotText { table, column } => {
                format!("key column \"{column}\" of relation \"{table}\" must be of type text or varchar")
            }
            Self::NotSoftDelete { table, column } => format!(
                "soft-delete column \"{column}\" of relation \"{table}\" must be boolean, a timestamp or a date"
            ),
            Self::BindingBroken { scope, why } => {
                format!("the {scope} scope binding of apollo_jobs is broken: {why}")
            }
            Self::ReadOnly(what) => format!("cannot {what} in a read-only transaction"),
            Self::RegistrationSuppressed => {
                "the registration was not stored: a trigger or rule on apollo_jobs.jobs suppressed the INSERT"
                    .into()
            }
            Self::RegistrationAltered => {
                "the registration was not stored: a trigger or rule on apollo_jobs.jobs changed the row"
                    .into()
            }
            Self::Immutable => "rows of apollo_jobs.jobs cannot be updated".into(),
            Self::PageSize(got) => format!("page_size must be between 1 and 1000, not {got}"),
            Self::ProjectJobsWithProject => {
                "include_project_jobs cannot be combined with a project_id".into()
            }
            Self::InvalidCursor => "invalid cursor: starting_after is not a job of this listing".into(),
            Self::EntropyUnavailable(_) => "could not generate random bytes for a job id".into(),
            Self::Internal(what) => format!("apollo_jobs internal error: {what}"),
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            Self::ArgumentTooLong { limit, actual, .. } => Some(format!(
                "It is {actual} bytes long; the limit is {limit} bytes."
            )),
            Self::InvalidJobType(_) => Some("A job_type matches ^[a-z][a-z0-9_]{0,62}$.".into()),
            Self::MalformedJobId(_) => Some(
                "A job id is \"oj_\" or \"pj_\" followed by 21 characters from [0-9A-Za-z].".into(),
            ),
            Self::ThermosIdTaken => Some(
                "The existing registration differs in job_class, org_id, project_id or job_type."
                    .into(),
            ),
            Self::EntropyUnavailable(why) => Some(why.clone()),
            Self::ReadOnly(_) => Some(
                "The server is a hot standby or the transaction is READ ONLY; reads and echoes of \
                 known thermos ids work here."
                    .into(),
            ),
            Self::NotSoftDelete { .. } => Some(
                "A boolean column hides rows where it is true or null; a timestamp or date column \
                 hides rows where it is not null."
                    .into(),
            ),
            Self::NullArgument(_)
            | Self::NotUtf8(_)
            | Self::EmptyArgument(_)
            | Self::UnknownJobClass(_)
            | Self::ProjectIdForOrgJob
            | Self::ProjectIdMissing
            | Self::ConcurrentRegistration
            | Self::JobsTableMissing
            | Self::JobsTableExists
            | Self::ExtensionNotUpdated
            | Self::NoSuchRelation(_)
            | Self::NoSuchColumn { .. }
            | Self::KeyNotText { .. }
            | Self::BindingBroken { .. }
            | Self::RegistrationSuppressed
            | Self::RegistrationAltered
            | Self::Immutable
            | Self::PageSize(_)
            | Self::ProjectJobsWithProject
            | Self::InvalidCursor
            | Self::Internal(_) => None,
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::UnknownJobClass(_) => Some("job_class is 'org' or 'project'."),
            Self::ThermosIdTaken => Some(
                "Repeat the original arguments to get the existing job back, or use another \
                 thermos_job_id.",
            ),
            Self::ConcurrentRegistration => Some("Retry the transaction."),
            Self::JobsTableMissing => Some("Run SELECT apollo_jobs.create_jobs_table(...) first."),
            Self::JobsTableExists => Some(
                "create_jobs_table() runs once per database; to change which host tables scope the \
                 jobs, use apollo_jobs.bind_scopes(...).",
            ),
            Self::ExtensionNotUpdated => Some("Run ALTER EXTENSION apollo_jobs UPDATE first."),
            Self::KeyNotText { .. } => {
                Some("apollo_jobs.jobs stores org and project ids as text; bind a text or varchar key.")
            }
            Self::BindingBroken { .. } => Some(
                "Rebind the host tables with SELECT apollo_jobs.bind_scopes(orgs => ..., projects => ...).",
            ),
            Self::ReadOnly(_) => Some("Send writes to the primary server."),
            Self::RegistrationSuppressed | Self::RegistrationAltered => Some(
                "Check the triggers and rules on apollo_jobs.jobs; registrations must reach the table unchanged.",
            ),
            Self::Immutable => Some(
                "Registrations are immutable. To repair a row, the table owner can disable trigger \
                 jobs_immutable in a transaction (see Repairs in the README).",
            ),
            Self::InvalidCursor => {
                Some("Pass the job_id of the last row of the previous page of the same listing.")
            }
            Self::NullArgument(_)
            | Self::NotUtf8(_)
            | Self::EmptyArgument(_)
            | Self::ArgumentTooLong { .. }
            | Self::ProjectIdForOrgJob
            | Self::ProjectIdMissing
            | Self::InvalidJobType(_)
            | Self::MalformedJobId(_)
            | Self::NoSuchRelation(_)
            | Self::NoSuchColumn { .. }
            | Self::NotSoftDelete { .. }
            | Self::EntropyUnavailable(_)
            | Self::PageSize(_)
            | Self::ProjectJobsWithProject
            | Self::Internal(_) => None,
        }
    }

    /// Raises this error as a PostgreSQL ERROR. Never returns.
    #[track_caller]
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.message(), "apollo_jobs");
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

/// Raises `Err` as a PostgreSQL ERROR, passes `Ok` through.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, JobError> {
    #[track_caller]
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.raise())
    }
}

/// At most `ECHO_CHARS` characters of caller input, cut on a char boundary.
fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The five-character SQLSTATE of a code, e.g. `"23505"`.
    fn sqlstate_text(code: PgSqlErrorCode) -> String {
        let packed = code as i32;
        (0..5)
            .map(|i| char::from((((packed >> (6 * i)) & 0x3F) as u8) + b'0'))
            .collect()
    }

    /// One value of every variant. The match below stops compiling when a
    /// variant is added, so this list (and the README test) must follow.
    fn every_variant() -> Vec<JobError> {
        let all = vec![
            JobError::NullArgument("a"),
            JobError::NotUtf8("a"),
            JobError::EmptyArgument("a"),
            JobError::ArgumentTooLong {
                arg: "a",
                limit: 1,
                actual: 2,
            },
            JobError::UnknownJobClass("x".into()),
            JobError::ProjectIdForOrgJob,
            JobError::ProjectIdMissing,
            JobError::InvalidJobType("x".into()),
            JobError::MalformedJobId("x".into()),
            JobError::ThermosIdTaken,
            JobError::ConcurrentRegistration,
            JobError::JobsTableMissing,
            JobError::JobsTableExists,
            JobError::ExtensionNotUpdated,
            JobError::NoSuchRelation(1),
            JobError::NoSuchColumn {
                table: "t".into(),
                column: "c".into(),
            },
            JobError::KeyNotText {
                table: "t".into(),
                column: "c".into(),
            },
            JobError::NotSoftDelete {
                table: "t".into(),
                column: "c".into(),
            },
            JobError::BindingBroken {
                scope: "org",
                why: "w".into(),
            },
            JobError::ReadOnly("w"),
            JobError::RegistrationSuppressed,
            JobError::RegistrationAltered,
            JobError::Immutable,
            JobError::PageSize(0),
            JobError::ProjectJobsWithProject,
            JobError::InvalidCursor,
            JobError::EntropyUnavailable("e".into()),
            JobError::Internal("i".into()),
        ];
        for e in &all {
            match e {
                JobError::NullArgument(_)
                | JobError::NotUtf8(_)
                | JobError::EmptyArgument(_)
                | JobError::ArgumentTooLong { .. }
                | JobError::UnknownJobClass(_)
                | JobError::ProjectIdForOrgJob
                | JobError::ProjectIdMissing
                | JobError::InvalidJobType(_)
                | JobError::MalformedJobId(_)
                | JobError::ThermosIdTaken
                | JobError::ConcurrentRegistration
                | JobError::JobsTableMissing
                | JobError::JobsTableExists
                | JobError::ExtensionNotUpdated
                | JobError::NoSuchRelation(_)
                | JobError::NoSuchColumn { .. }
                | JobError::KeyNotText { .. }
                | JobError::NotSoftDelete { .. }
                | JobError::BindingBroken { .. }
                | JobError::ReadOnly(_)
                | JobError::RegistrationSuppressed
                | JobError::RegistrationAltered
                | JobError::Immutable
                | JobError::PageSize(_)
                | JobError::ProjectJobsWithProject
                | JobError::InvalidCursor
                | JobError::EntropyUnavailable(_)
                | JobError::Internal(_) => {}
            }
        }
        all
    }

    /// SQLSTATEs a caller can get from the server itself, which the README
    /// documents beside the extension's own: FK, CHECK/domain, privileges,
    /// DROP EXTENSION, and the retryable ones.
    const SERVER_SQLSTATES: [&str; 8] = [
        "23503", "23514", "42501", "2BP01", "40P01", "55P03", "57014", "57P01",
    ];

    /// The README's error table lists exactly the SQLSTATEs the code raises
    /// plus the documented server ones, each once.
    #[test]
    fn the_readme_error_table_matches_the_code() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Errors\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has an Errors section");
        let mut listed = Vec::new();
        for line in section.lines() {
            let Some(cell) = line.strip_prefix("| ").and_then(|l| l.split('|').next()) else {
                continue;
            };
            let code = cell.trim().trim_matches('`');
            if code.len() == 5
                && code.bytes().all(|b| b.is_ascii_alphanumeric())
                && code != "SQLSTATE"
            {
                listed.push(code.to_string());
            }
        }
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            listed.len(),
            "a SQLSTATE is listed twice: {listed:?}"
        );
        let expected: BTreeSet<String> = every_variant()
            .iter()
            .map(|e| sqlstate_text(e.sqlstate()))
            .chain(SERVER_SQLSTATES.iter().map(|s| s.to_string()))
            .collect();
        assert_eq!(unique, expected);
    }

    #[test]
    fn sqlstate_text_unpacks_codes() {
        assert_eq!(
            sqlstate_text(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION),
            "23505"
        );
        assert_eq!(
            sqlstate_text(PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE),
            "40001"
        );
        assert_eq!(
            sqlstate_text(PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION),
            "25006"
        );
    }

    #[test]
    fn echo_truncates_on_char_boundaries() {
        assert_eq!(echo("short"), "short");
        let long = "é".repeat(100);
        let e = echo(&long);
        assert_eq!(e.chars().count(), ECHO_CHARS + 3);
        assert!(e.ends_with("..."));
    }

    #[test]
    fn taken_thermos_id_discloses_nothing_of_the_other_job() {
        let e = JobError::ThermosIdTaken;
        let text = format!("{} {:?} {:?}", e.message(), e.detail(), e.hint());
        assert!(!text.contains("oj_") && !text.contains("pj_"));
    }
}
