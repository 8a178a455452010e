//! Branded job ids: `oj_` (org-scoped) or `pj_` (project-scoped) followed by a
//! 21-symbol body drawn from `[0-9A-Za-z]`.
//!
//! Why this module has no Postgres in it: the grammar and the minting are the
//! part of the extension that every other part trusts, so they are plain Rust
//! that property tests can hammer without a server.
//!
//! Why the validator is a byte loop and not a regex: it runs inside the domain
//! CHECK on every insert and every cast, must never allocate or raise, and the
//! grammar is a fixed length, a fixed prefix and an ASCII class.
//!
//! Why nanoid gets our own byte source: its default seeds a fresh `StdRng`
//! from the OS for every id (one `getrandom` call per id). We keep one
//! ChaCha-based CSPRNG per backend process, seeded from the OS, and reseed it
//! whenever the process key changes, so a forked child never continues its
//! parent's stream. nanoid's mask-and-reject loop keeps the 62 symbols
//! uniformly likely (no modulo bias).

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Number of symbols after the prefix.
pub const BODY_LEN: usize = 21;
/// Length in bytes of the prefix, `oj_` or `pj_`.
pub const PREFIX_LEN: usize = 3;
/// Total length of a valid job id.
pub const ID_LEN: usize = PREFIX_LEN + BODY_LEN;

/// The 62 alphanumeric symbols a job id body is drawn from.
pub const ALPHABET: [char; 62] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I',
    'J', 'K', 'L', 'M', 'N', 'O', 'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'a', 'b',
    'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u',
    'v', 'w', 'x', 'y', 'z',
];

/// The scope a job belongs to; encoded in the id's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobClass {
    Org,
    Project,
}

impl JobClass {
    /// Parses the SQL spelling, `'org'` or `'project'` (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "org" => Some(Self::Org),
            "project" => Some(Self::Project),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Org => "org",
            Self::Project => "project",
        }
    }

    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Org => "oj_",
            Self::Project => "pj_",
        }
    }
}

/// The class a well-formed id encodes, or `None` if `candidate` is not a job id.
pub fn class_of(candidate: &[u8]) -> Option<JobClass> {
    if candidate.len() != ID_LEN {
        return None;
    }
    let (prefix, body) = candidate.split_at(PREFIX_LEN);
    let class = match prefix {
        b"oj_" => JobClass::Org,
        b"pj_" => JobClass::Project,
        _ => return None,
    };
    body.iter().all(u8::is_ascii_alphanumeric).then_some(class)
}

/// True iff `candidate` matches `^(oj|pj)_[0-9A-Za-z]{21}$`.
pub fn is_valid(candidate: &[u8]) -> bool {
    class_of(candidate).is_some()
}

thread_local! {
    /// (process key it was seeded in, generator).
    static RNG: RefCell<Option<(u32, StdRng)>> = const { RefCell::new(None) };
}

/// The operating system could not provide seed bytes.
#[derive(Debug)]
pub struct EntropyUnavailable(pub String);

/// Mints a fresh id of `class`. `process` identifies the current process (the
/// backend's pid): when it differs from the one the generator was seeded in,
/// the generator is reseeded from the OS first.
pub fn mint(class: JobClass, process: u32) -> Result<String, EntropyUnavailable> {
    RNG.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rng = match &mut *slot {
            Some((seeded_in, rng)) if *seeded_in == process => rng,
            _ => {
                let fresh =
                    StdRng::try_from_os_rng().map_err(|e| EntropyUnavailable(e.to_string()))?;
                &mut slot.insert((process, fresh)).1
            }
        };
        let body = nanoid::format(
            |n| {
                let mut bytes = vec![0u8; n];
                rng.fill_bytes(&mut bytes);
                bytes
            },
            &ALPHABET,
            BODY_LEN,
        );
        let mut id = String::with_capacity(ID_LEN);
        id.push_str(class.prefix());
        id.push_str(&body);
        Ok(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The documented grammar, written independently of `class_of`.
    fn grammar(s: &[u8]) -> Option<JobClass> {
        let text = std::str::from_utf8(s).ok()?;
        let (prefix, body) = text.split_once('_')?;
        let class = match prefix {
            "oj" => JobClass::Org,
            "pj" => JobClass::Project,
            _ => return None,
        };
        let ok = body.chars().count() == BODY_LEN && body.chars().all(|c| ALPHABET.contains(&c));
        ok.then_some(class)
    }

    fn pid() -> u32 {
        std::process::id()
    }

    #[test]
    fn alphabet_is_the_62_alphanumerics_in_order() {
        let expected: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
        assert_eq!(ALPHABET.to_vec(), expected);
    }

    #[test]
    fn table_of_edge_cases() {
        let cases: &[(&str, Option<JobClass>)] = &[
            ("oj_V1StGXR8Z5jdHi6BmyT2a", Some(JobClass::Org)),
            ("pj_000000000000000000000", Some(JobClass::Project)),
            ("pj_zzzzzzzzzzzzzzzzzzzzz", Some(JobClass::Project)),
            ("oj_V1StGXR8Z5jdHi6BmyT2", None),        // 20 symbols
            ("oj_V1StGXR8Z5jdHi6BmyT2ab", None),      // 22 symbols
            ("OJ_V1StGXR8Z5jdHi6BmyT2a", None),       // wrong-case prefix
            ("oj__1StGXR8Z5jdHi6BmyT2a", None),       // underscore in body
            ("oj_V1StGXR8Z5jdHi6Bmy-2a", None),       // dash in body
            ("xj_V1StGXR8Z5jdHi6BmyT2a", None),       // unknown prefix
            ("oj-V1StGXR8Z5jdHi6BmyT2a", None),       // wrong separator
            ("oj_V1StGXR8Z5jdHi6BmyT2\u{430}", None), // Cyrillic look-alike
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(class_of(input.as_bytes()), *want, "input {input:?}");
            assert_eq!(
                grammar(input.as_bytes()),
                *want,
                "grammar disagrees on {input:?}"
            );
        }
    }

    #[test]
    fn minted_ids_carry_their_class() {
        for class in [JobClass::Org, JobClass::Project] {
            let id = mint(class, pid()).expect("entropy");
            assert!(id.starts_with(class.prefix()));
            assert_eq!(class_of(id.as_bytes()), Some(class));
        }
    }

    #[test]
    fn a_new_process_key_reseeds() {
        let seeded_for = || RNG.with(|cell| cell.borrow().as_ref().map(|(p, _)| *p));
        mint(JobClass::Org, 1).expect("entropy");
        assert_eq!(seeded_for(), Some(1));
        mint(JobClass::Org, 2).expect("entropy");
        assert_eq!(seeded_for(), Some(2), "a changed process key must reseed");
    }

    /// Each of the 62 symbols must appear with frequency 1/62 within a
    /// chi-square bound; a modulo-biased mapping of 256 byte values onto 62
    /// symbols fails this at this sample size.
    #[test]
    fn symbols_are_uniform() {
        const IDS: usize = 60_000;
        let mut counts = [0u64; 128];
        for _ in 0..IDS {
            let id = mint(JobClass::Project, pid()).expect("entropy");
            for b in id.as_bytes()[PREFIX_LEN..].iter() {
                counts[*b as usize] += 1;
            }
        }
        let n = (IDS * BODY_LEN) as f64;
        let expected = n / 62.0;
        let mut chi2 = 0.0;
        for c in ALPHABET {
            let observed = counts[c as usize] as f64;
            assert!(observed > 0.0, "symbol {c} never drawn");
            chi2 += (observed - expected).powi(2) / expected;
        }
        // 61 degrees of freedom: P(chi2 > 110) < 1e-4 for a uniform source.
        assert!(
            chi2 < 110.0,
            "chi-square {chi2:.1} over 61 dof: symbols are biased"
        );
        // A bias of `byte % 62` would over-weight the first 8 symbols by 5/4.
        let first8: f64 = ALPHABET[..8]
            .iter()
            .map(|c| counts[*c as usize] as f64)
            .sum();
        let ratio = first8 / (8.0 * expected);
        assert!(
            (0.98..1.02).contains(&ratio),
            "first symbols over-drawn: {ratio:.4}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn validator_agrees_with_grammar_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(class_of(&bytes), grammar(&bytes));
            prop_assert_eq!(is_valid(&bytes), grammar(&bytes).is_some());
        }

        #[test]
        fn validator_agrees_with_grammar_on_any_string(s in "\\PC{0,40}") {
            prop_assert_eq!(class_of(s.as_bytes()), grammar(s.as_bytes()));
        }

        #[test]
        fn validator_agrees_on_near_misses(prefix in "(oj|pj|OJ|Pj|xj)[_-]", body in "[0-9A-Za-z_\\-]{19,23}") {
            let s = format!("{prefix}{body}");
            prop_assert_eq!(class_of(s.as_bytes()), grammar(s.as_bytes()));
        }

        #[test]
        fn every_minted_id_is_valid(project in any::<bool>()) {
            let class = if project { JobClass::Project } else { JobClass::Org };
            let id = mint(class, pid()).expect("entropy");
            prop_assert_eq!(id.len(), ID_LEN);
            prop_assert_eq!(class_of(id.as_bytes()), Some(class));
            prop_assert_eq!(grammar(id.as_bytes()), Some(class));
        }
    }
}
