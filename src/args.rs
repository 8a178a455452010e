//! Argument rules shared by the functions and mirrored by the table's CHECK.
//!
//! Why here and not only in CHECK constraints: a CHECK failure is a 23514 that
//! names a constraint, after a row was formed; callers of the functions get a
//! 22004/22023 that names the argument, before anything is written or locked.
//! The table's CHECK (`jobs_row_check`, see `ddl.rs`) calls `row_is_valid`
//! below, so a plain INSERT and a function call accept the same rows by
//! construction.

use crate::error::JobError;
use crate::id::{self, JobClass};

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

/// True iff `b` matches `^[a-z][a-z0-9_]{0,62}$`.
pub fn is_job_type(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= JOB_TYPE_MAX
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The row rules of `apollo_jobs.jobs`, the table's one CHECK: the class is
/// `org` or `project` and is the id's prefix, a project job (only) has a
/// project_id, scope ids are 1..=255 bytes, job_type matches
/// `^[a-z][a-z0-9_]{0,62}$`, and thermos_job_id is 1..=1000 bytes.
pub fn row_is_valid(
    job_id: &[u8],
    job_class: &[u8],
    org_id: &[u8],
    project_id: Option<&[u8]>,
    job_type: &[u8],
    thermos_job_id: &[u8],
) -> bool {
    let Some(class) = std::str::from_utf8(job_class)
        .ok()
        .and_then(JobClass::parse)
    else {
        return false;
    };
    let scope_id = |id: &[u8]| (1..=SCOPE_ID_MAX).contains(&id.len());
    id::class_of(job_id) == Some(class)
        && project_id.is_some() == (class == JobClass::Project)
        && scope_id(org_id)
        && project_id.is_none_or(scope_id)
        && is_job_type(job_type)
        && (1..=THERMOS_ID_MAX).contains(&thermos_job_id.len())
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
    if !is_job_type(job_type.as_bytes()) {
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
            assert!(is_job_type(ok.as_bytes()), "{ok:?} should be accepted");
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
            assert!(!is_job_type(bad.as_bytes()), "{bad:?} should be rejected");
        }
    }

    const ORG_ID: &[u8] = b"oj_V1StGXR8Z5jdHi6BmyT2a";
    const PROJECT_ID: &[u8] = b"pj_V1StGXR8Z5jdHi6BmyT2a";

    macro_rules! row_cases {
        ($($name:ident: ($id:expr, $c:expr, $o:expr, $p:expr, $j:expr, $t:expr) => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let (o, t) = ($o.to_vec(), $t.to_vec());
                assert_eq!(row_is_valid($id, $c, &o, $p, $j, &t), $want);
            }
        )*};
    }

    row_cases! {
        row_org: (ORG_ID, b"org", b"o1", None, b"t", b"w") => true;
        row_project: (PROJECT_ID, b"project", b"o1", Some(&b"p1"[..]), b"batch_revoke", b"w") => true;
        row_limits: (ORG_ID, b"org", [b'o'; 255], None, b"t", [b'w'; 1000]) => true;
        row_unknown_class: (ORG_ID, b"team", b"o1", None, b"t", b"w") => false;
        row_prefix_mismatch: (PROJECT_ID, b"org", b"o1", None, b"t", b"w") => false;
        row_malformed_id: (b"oj_nope", b"org", b"o1", None, b"t", b"w") => false;
        row_org_job_with_project: (ORG_ID, b"org", b"o1", Some(&b"p1"[..]), b"t", b"w") => false;
        row_project_job_without_project: (PROJECT_ID, b"project", b"o1", None, b"t", b"w") => false;
        row_empty_org: (ORG_ID, b"org", b"", None, b"t", b"w") => false;
        row_long_org: (ORG_ID, b"org", [b'o'; 256], None, b"t", b"w") => false;
        row_empty_project: (PROJECT_ID, b"project", b"o1", Some(&b""[..]), b"t", b"w") => false;
        row_long_project: (PROJECT_ID, b"project", b"o1", Some(&[b'p'; 256][..]), b"t", b"w") => false;
        row_bad_type: (ORG_ID, b"org", b"o1", None, b"Bad", b"w") => false;
        row_empty_thermos: (ORG_ID, b"org", b"o1", None, b"t", b"") => false;
        row_long_thermos: (ORG_ID, b"org", b"o1", None, b"t", [b'w'; 1001]) => false;
    }

    proptest::proptest! {
        /// A registration the functions accept is a row the CHECK accepts,
        /// and the other way round, for any arguments.
        #[test]
        fn registration_and_row_rules_agree(
            thermos in "[a-z]{0,3}|.{999,1001}",
            class in "org|project|team",
            org in "[a-z0-9]{0,2}|.{254,256}",
            project in proptest::option::of("[a-z0-9]{0,2}|.{254,256}"),
            job_type in "[a-z_]{0,3}|[A-Z0-9]{1,2}|[a-z]{62,64}",
        ) {
            let accepted = registration(
                Some(&thermos), Some(&class), Some(&org), project.as_deref(), Some(&job_type),
            ).is_ok();
            let id: &[u8] = if class == "project" { PROJECT_ID } else { ORG_ID };
            let row = row_is_valid(
                id,
                class.as_bytes(),
                org.as_bytes(),
                project.as_deref().map(str::as_bytes),
                job_type.as_bytes(),
                thermos.as_bytes(),
            );
            proptest::prop_assert_eq!(accepted, row);
        }
    }
}
