//! Password and PIN hashing (argon2id) and the password policy.
//!
//! # Hash parameters
//!
//! argon2id, version 0x13, **m = 19456 KiB (19 MiB), t = 2, p = 1**, 16-byte random
//! salt, 32-byte output, stored as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). These are OWASP's first
//! recommended argon2id setting. They suit the box: 19 MiB per hash in flight is
//! affordable with a few hundred MB of RAM, and a hash takes tens of milliseconds on a
//! Cortex-A53/A7 class CPU, which a login can afford and a guesser cannot. Verifying
//! uses the parameters stored in each hash, so a later change of [`HashParams`] keeps
//! old hashes valid. PINs use the same parameters (a 4-8 digit PIN has little entropy,
//! so the lockout does most of the protection; the hash keeps PINs unreadable).
//!
//! # Policy
//!
//! A password is 10 to 128 characters, not equal to the username (case-insensitive),
//! and not in the built-in list of common passwords (`common-passwords.txt`,
//! case-insensitive). A PIN is 4 to 8 ASCII digits.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{Error, FieldProblem, Result};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted, in characters.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// The common-password list, one per line (`#` comments).
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism (lanes).
    pub p: u32,
}

impl HashParams {
    /// OWASP's recommendation and this firmware's default: m=19456 KiB, t=2, p=1.
    pub const OWASP: HashParams = HashParams {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };

    fn argon2(self) -> Result<Argon2<'static>> {
        let params =
            Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(|e| Error::PasswordHash {
                op: "argon2 parameters",
                source: e.into(),
            })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams::OWASP
    }
}

/// Hashes a password or PIN into a PHC string with a fresh random salt.
pub fn hash_secret(secret: &str, params: HashParams) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|source| Error::Random {
        what: "salt",
        source,
    })?;
    let salt = SaltString::encode_b64(&salt).map_err(|source| Error::PasswordHash {
        op: "encode salt",
        source,
    })?;
    params
        .argon2()?
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|source| Error::PasswordHash {
            op: "hash password",
            source,
        })
}

/// Whether `secret` matches the PHC string `hash` (using the parameters stored in it).
/// A hash that does not parse is an error, not a mismatch.
pub fn verify_secret(secret: &str, hash: &str) -> Result<bool> {
    let parsed = PasswordHash::new(hash).map_err(|source| Error::PasswordHash {
        op: "parse stored hash",
        source,
    })?;
    match Argon2::default().verify_password(secret.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(source) => Err(Error::PasswordHash {
            op: "verify password",
            source,
        }),
    }
}

/// Checks that `hash` is an argon2id PHC string (for `[auth] installer_password_hash`).
pub fn check_phc(hash: &str) -> std::result::Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "algorithm is {}, expected argon2id",
            parsed.algorithm
        ));
    }
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash".to_owned());
    }
    Ok(())
}

/// Whether `password` is in the common-password list (case-insensitive).
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    COMMON_PASSWORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| l == lower)
}

/// The problems of `password` for user `username` under the policy (empty = acceptable).
pub fn password_problems(username: &str, password: &str) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    let mut problem = |message: String| {
        out.push(FieldProblem {
            field: "password".to_owned(),
            message,
        })
    };
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        problem(format!(
            "must be at least {MIN_PASSWORD_CHARS} characters (has {chars})"
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        problem(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    if password.eq_ignore_ascii_case(username) || password.to_lowercase() == username.to_lowercase()
    {
        problem("must not be the username".to_owned());
    }
    if is_common(password) {
        problem("is a commonly used password; choose another".to_owned());
    }
    out
}

/// The problems of a PIN (4 to 8 digits).
pub fn pin_problems(pin: &str) -> Vec<FieldProblem> {
    if (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Vec::new()
    } else {
        vec![FieldProblem {
            field: "pin".to_owned(),
            message: "must be 4 to 8 digits".to_owned(),
        }]
    }
}

/// A random password of 16 characters from an alphabet without look-alikes
/// (no 0/O, 1/l/I), for imported users and the installer label.
pub fn generate_password() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789";
    // Largest multiple of the alphabet size that fits a byte: rejection sampling
    // above it keeps every character equally likely.
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u16;
    let mut out = String::with_capacity(16);
    while out.len() < 16 {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf).map_err(|source| Error::Random {
            what: "generated password",
            source,
        })?;
        for b in buf {
            if u16::from(b) < limit && out.len() < 16 {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters for tests that do not check the parameters themselves.
    const FAST: HashParams = HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn hash_and_verify() {
        let h = hash_secret("correct horse battery", FAST).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(verify_secret("correct horse battery", &h).expect("verify"));
        assert!(!verify_secret("correct horse batterY", &h).expect("verify"));
        assert!(verify_secret("x", "not a hash").is_err());
        // Fresh salt each time.
        assert_ne!(h, hash_secret("correct horse battery", FAST).expect("hash"));
    }

    #[test]
    fn default_parameters_are_owasp_and_land_in_the_phc_string() {
        let h = hash_secret("correct horse battery", HashParams::default()).expect("hash");
        let parsed = PasswordHash::new(&h).expect("PHC");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.version, Some(19));
        assert_eq!(parsed.params.get_decimal("m"), Some(19_456));
        assert_eq!(parsed.params.get_decimal("t"), Some(2));
        assert_eq!(parsed.params.get_decimal("p"), Some(1));
        assert_eq!(parsed.hash.map(|o| o.len()), Some(32));
        assert!(check_phc(&h).is_ok());
    }

    #[test]
    fn policy() {
        assert!(password_problems("alice", "tr0ub4dor&3x").is_empty());
        let fields = |p: &str| -> Vec<String> {
            password_problems("alice1234567", p)
                .into_iter()
                .map(|p| p.message)
                .collect()
        };
        assert!(fields("short")[0].contains("at least 10"));
        assert!(fields(&"x".repeat(129))[0].contains("at most 128"));
        assert!(fields("ALICE1234567")[0].contains("username"));
        assert!(fields("Password123")[0].contains("common"));
        assert!(fields("qwertyuiop")[0].contains("common"));
        assert!(is_common("1234567890"));
        assert!(!is_common(
            "# Common passwords refused by the password policy"
        ));
        assert!(pin_problems("1234").is_empty());
        assert!(pin_problems("12345678").is_empty());
        assert!(!pin_problems("123").is_empty());
        assert!(!pin_problems("123456789").is_empty());
        assert!(!pin_problems("12a4").is_empty());
    }

    #[test]
    fn generated_passwords_pass_the_policy() {
        for _ in 0..20 {
            let p = generate_password().expect("random");
            assert_eq!(p.len(), 16);
            assert!(password_problems("someone", &p).is_empty(), "{p}");
        }
    }
}
