//! Argument rules shared by the functions and mirrored by the table's CHECKs.
//!
//! Why here and not only in CHECK constraints: a CHECK failure is a 23514 that
//! names a constraint, after a row was formed; callers of the functions get a
//! 22004/22023 that names the argument, before anything is written or locked.
//! The limits below are the same numbers the table's CHECKs use (see
//! `ddl.rs`), so a plain INSERT and a function call accept the same rows.

use crate::error::JobError;
use crate::id::JobClass;

/// Byte limit of `thermos_job_id`.
pub const THERMOS_ID_MAX: usize = 1000;
/// Byte limit of `org_id` and `project_id`.
pub const SCOPE_ID_MAX: usize = 255;
/// Byte limit of `job_type` (1 + 62 symbols).
pub const JOB_TYPE_MAX: usize = 63;

/// The validated arguments of `upsert_job_by_thermos_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration<'a> {
    pub thermos_job_id: &'a str,
    pub job_class: JobClass,
    pub org_id: &'a str,
    pub project_id: Option<&'a str>,
    pub job_type: &'a str,
}

/// A required, non-empty text argument of at most `limit` bytes.
pub fn required<'a>(
    arg: &'static str,
    value: Option<&'a str>,
    limit: usize,
) -> Result<&'a str, JobError> {
    let value = value.ok_or(JobError::NullArgument(arg))?;
    bounded(arg, value, limit)
}

fn bounded<'a>(arg: &'static str, value: &'a str, limit: usize) -> Result<&'a str, JobError> {
    if value.is_empty() {
        return Err(JobError::EmptyArgument(arg));
    }
    if value.len() > limit {
        return Err(JobError::ArgumentTooLong {
            arg,
            limit,
            actual: value.len(),
        });
    }
    Ok(value)
}

/// `job_class` as the enum; NULL is 22004, anything else unknown is 22023.
pub fn job_class(value: Option<&str>) -> Result<JobClass, JobError> {
    let value = value.ok_or(JobError::NullArgument("job_class"))?;
    JobClass::parse(value).ok_or_else(|| JobError::UnknownJobClass(value.to_string()))
}

/// True iff `s` matches `^[a-z][a-z0-9_]{0,62}$`.
pub fn is_job_type(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= JOB_TYPE_MAX
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Checks every argument of `upsert_job_by_thermos_id`, in signature order.
pub fn registration<'a>(
    thermos_job_id: Option<&'a str>,
    job_class: Option<&'a str>,
    org_id: Option<&'a str>,
    project_id: Option<&'a str>,
    job_type: Option<&'a str>,
) -> Result<Registration<'a>, JobError> {
    let thermos_job_id = required("thermos_job_id", thermos_job_id, THERMOS_ID_MAX)?;
    let class = self::job_class(job_class)?;
    let org_id = required("org_id", org_id, SCOPE_ID_MAX)?;
    let project_id = match (class, project_id) {
        (JobClass::Org, None) => None,
        (JobClass::Org, Some(_)) => return Err(JobError::ProjectIdForOrgJob),
        (JobClass::Project, None) => return Err(JobError::ProjectIdMissing),
        (JobClass::Project, Some(p)) => Some(bounded("project_id", p, SCOPE_ID_MAX)?),
    };
    let job_type = job_type.ok_or(JobError::NullArgument("job_type"))?;
    if !is_job_type(job_type) {
        return Err(JobError::InvalidJobType(job_type.to_string()));
    }
    Ok(Registration {
        thermos_job_id,
        job_class: class,
        org_id,
        project_id,
        job_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! registration_cases {
        ($($name:ident: ($t:expr, $c:expr, $o:expr, $p:expr, $j:expr) => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let got = registration($t, $c, $o, $p, $j).map(|_| ());
                assert_eq!(got, $want);
            }
        )*};
    }

    registration_cases! {
        org_ok: (Some("wf-1"), Some("org"), Some("o1"), None, Some("batch_revoke")) => Ok(());
        project_ok: (Some("wf-1"), Some("project"), Some("o1"), Some("p1"), Some("batch_revoke")) => Ok(());
        thermos_at_limit: (Some("x".repeat(1000).as_str()), Some("org"), Some("o1"), None, Some("t")) => Ok(());
        null_thermos: (None, Some("org"), Some("o1"), None, Some("t")) => Err(JobError::NullArgument("thermos_job_id"));
        empty_thermos: (Some(""), Some("org"), Some("o1"), None, Some("t")) => Err(JobError::EmptyArgument("thermos_job_id"));
        long_thermos: (Some("x".repeat(1001).as_str()), Some("org"), Some("o1"), None, Some("t"))
            => Err(JobError::ArgumentTooLong { arg: "thermos_job_id", limit: 1000, actual: 1001 });
        null_class: (Some("w"), None, Some("o1"), None, Some("t")) => Err(JobError::NullArgument("job_class"));
        unknown_class: (Some("w"), Some("Org"), Some("o1"), None, Some("t")) => Err(JobError::UnknownJobClass("Org".into()));
        null_org: (Some("w"), Some("org"), None, None, Some("t")) => Err(JobError::NullArgument("org_id"));
        empty_org: (Some("w"), Some("org"), Some(""), None, Some("t")) => Err(JobError::EmptyArgument("org_id"));
        long_org: (Some("w"), Some("org"), Some("o".repeat(256).as_str()), None, Some("t"))
            => Err(JobError::ArgumentTooLong { arg: "org_id", limit: 255, actual: 256 });
        project_for_org: (Some("w"), Some("org"), Some("o1"), Some("p1"), Some("t")) => Err(JobError::ProjectIdForOrgJob);
        no_project: (Some("w"), Some("project"), Some("o1"), None, Some("t")) => Err(JobError::ProjectIdMissing);
        empty_project: (Some("w"), Some("project"), Some("o1"), Some(""), Some("t")) => Err(JobError::EmptyArgument("project_id"));
        null_type: (Some("w"), Some("org"), Some("o1"), None, None) => Err(JobError::NullArgument("job_type"));
        bad_type: (Some("w"), Some("org"), Some("o1"), None, Some("Batch")) => Err(JobError::InvalidJobType("Batch".into()));
    }

    #[test]
    fn job_type_grammar() {
        for ok in ["a", "batch_revoke", "a0_", &format!("a{}", "b".repeat(62))] {
            assert!(is_job_type(ok), "{ok:?} should be accepted");
        }
        for bad in [
            "",
            "_a",
            "0a",
            "A",
            "a-b",
            "a b",
            "é",
            &format!("a{}", "b".repeat(63)),
        ] {
            assert!(!is_job_type(bad), "{bad:?} should be rejected");
        }
    }
}
