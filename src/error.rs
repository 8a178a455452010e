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
    /// 42804: the soft-delete column is not boolean.
    NotBoolean { table: String, column: String },
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
            Self::NotBoolean { .. } => ERRCODE_DATATYPE_MISMATCH,
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
            Self::NotBoolean { table, column } => {
                format!("column \"{column}\" of relation \"{table}\" must be of type boolean")
            }
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
            _ => None,
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
            Self::JobsTableExists => {
                Some("create_jobs_table() runs once per database; the table is ready to use.")
            }
            Self::ExtensionNotUpdated => Some("Run ALTER EXTENSION apollo_jobs UPDATE first."),
            _ => None,
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
