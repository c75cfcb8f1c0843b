//! Mosquitto password files, read unchanged.
//!
//! One `username:hash` per line; `#` starts a comment line; blank lines are skipped; usernames
//! never contain `:`. The hash is one of (Mosquitto's `src/password_mosq.c`,
//! `libcommon/password_common.c`):
//!
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 with a 64-byte output. Mosquitto 2.0
//!   writes 101 iterations and a 12-byte salt, 2.1 writes 1000 iterations and a 64-byte salt.
//! - `$6$<salt>$<hash>`: one SHA-512 of password ‖ salt (Mosquitto 1.6 and earlier, VerneMQ).
//! - `$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>`: the PHC string of libargon2 (Mosquitto 2.1).
//!
//! Salt and hash of `$6$` / `$7$` are standard base64 with padding; PHC strings use unpadded
//! base64. Hashes are checked when the file is loaded, so a typo fails at start, not at CONNECT.

use super::error::{AuthFileError, HashProblem, Problem};
use argon2::password_hash::phc;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Fewest PBKDF2 iterations accepted (what Mosquitto 2.0 writes).
pub const PBKDF2_ITERATIONS_MIN: u32 = 101;
/// Most PBKDF2 iterations accepted: about a second of CPU per CONNECT on a 2020s core; more is a
/// typo or an attempt to stall the broker.
pub const PBKDF2_ITERATIONS_MAX: u32 = 1_000_000;
/// Largest argon2 memory cost accepted, in KiB (256 MiB; Mosquitto writes 47,104 KiB). Every
/// verification allocates this much.
pub const ARGON2_MEMORY_KIB_MAX: u32 = 256 * 1024;
/// Most argon2 passes (`t`) accepted.
pub const ARGON2_PASSES_MAX: u32 = 16;
/// Most argon2 lanes (`p`) accepted.
pub const ARGON2_LANES_MAX: u32 = 16;

/// SHA-512 output, the hash length of `$6$` and `$7$` entries.
const HASH_BYTES: usize = 64;

/// Standard base64 alphabet; padding written, and accepted with or without on read.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A parsed password file: username to hash.
#[derive(Debug, Clone)]
pub struct PasswordFile {
    users: HashMap<String, UserEntry>,
    /// Verified against when the username is unknown, so that costs what a wrong password costs:
    /// the first entry of the file (files mixing hash types should be migrated to one).
    dummy: Hash,
}

#[derive(Debug, Clone)]
struct UserEntry {
    hash: Hash,
    line: usize,
}

/// One stored password hash, decoded.
#[derive(Debug, Clone)]
pub(crate) enum Hash {
    Sha512 {
        salt: Vec<u8>,
        hash: [u8; HASH_BYTES],
    },
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; HASH_BYTES],
    },
    Argon2id {
        params: argon2::Params,
        version: argon2::Version,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl PasswordFile {
    /// Reads and parses a password file ([`super::FILE_BYTES_MAX`] at most).
    pub fn load(path: &Path) -> Result<PasswordFile, AuthFileError> {
        let text = super::read_file(path)?;
        PasswordFile::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a password file; `origin` (usually the path) names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PasswordFile, AuthFileError> {
        let mut users: HashMap<String, UserEntry> = HashMap::new();
        let mut dummy = None;
        for numbered in super::numbered_lines(text, origin) {
            let (line, content) = numbered?;
            let line_error = |problem| AuthFileError::Line {
                origin: origin.to_owned(),
                line,
                problem,
            };
            let Some((username, hash)) = parse_line(content).map_err(line_error)? else {
                continue;
            };
            let hash = Hash::parse(username, hash).map_err(line_error)?;
            dummy.get_or_insert_with(|| hash.clone());
            match users.entry(username.to_owned()) {
                Entry::Occupied(first) => {
                    return Err(line_error(Problem::DuplicateUser {
                        username: username.to_owned(),
                        first_line: first.get().line,
                    }));
                }
                Entry::Vacant(slot) => {
                    slot.insert(UserEntry { hash, line });
                }
            }
        }
        Ok(PasswordFile {
            users,
            dummy: dummy.unwrap_or_else(Hash::empty_file_dummy),
        })
    }

    /// True if `username` is in the file and `password` matches its hash. The comparison is
    /// constant-time, and an unknown user costs one verification against a dummy hash.
    ///
    /// This costs what the hash costs (argon2id as Mosquitto writes it: tens of milliseconds and
    /// 46 MiB), so callers on a shard should not run many at once.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(entry) => entry.hash.verify(password),
            None => {
                std::hint::black_box(self.dummy.verify(password));
                false
            }
        }
    }

    /// True if the file has an entry for `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// `Ok(None)` for comments and blank lines, else the username and the hash text.
pub(crate) fn parse_line(line: &str) -> Result<Option<(&str, &str)>, Problem> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let (username, hash) = line.split_once(':').ok_or(Problem::MissingColon)?;
    if username.is_empty() {
        return Err(Problem::EmptyUsername);
    }
    let hash = hash.trim();
    if hash.is_empty() {
        return Err(Problem::EmptyHash {
            username: username.to_owned(),
        });
    }
    Ok(Some((username, hash)))
}

impl Hash {
    fn parse(username: &str, text: &str) -> Result<Hash, Problem> {
        let bad = |what| Problem::BadHash {
            username: username.to_owned(),
            what,
        };
        if let Some(rest) = text.strip_prefix("$7$") {
            parse_pbkdf2(rest).map_err(bad)
        } else if let Some(rest) = text.strip_prefix("$6$") {
            parse_sha512(rest).map_err(bad)
        } else if text.starts_with("$argon2") {
            parse_argon2(text).map_err(bad)
        } else if let Some(rest) = text.strip_prefix('$') {
            let prefix = rest.split('$').next().unwrap_or_default();
            Err(Problem::UnknownHashType {
                username: username.to_owned(),
                prefix: format!("${prefix}$"),
            })
        } else {
            Err(Problem::PlainText {
                username: username.to_owned(),
            })
        }
    }

    /// The dummy of a file without users: nobody can log in, the cost hides nothing.
    fn empty_file_dummy() -> Hash {
        Hash::Pbkdf2Sha512 {
            iterations: PBKDF2_ITERATIONS_MIN,
            salt: vec![0; 12],
            hash: [0; HASH_BYTES],
        }
    }

    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Sha512 { salt, hash } => {
                let computed = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize();
                computed.as_slice().ct_eq(hash).into()
            }
            Hash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut computed = [0u8; HASH_BYTES];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                computed.ct_eq(hash).into()
            }
            Hash::Argon2id {
                params,
                version,
                salt,
                hash,
            } => {
                let hasher =
                    argon2::Argon2::new(argon2::Algorithm::Argon2id, *version, params.clone());
                let mut computed = vec![0u8; hash.len()];
                match hasher.hash_password_into(password, salt, &mut computed) {
                    Ok(()) => computed.ct_eq(hash).into(),
                    // Only a password longer than 4 GiB gets here; it matches nothing.
                    Err(_) => false,
                }
            }
        }
    }
}

/// `<iterations>$<salt>$<hash>` after `$7$`.
fn parse_pbkdf2(rest: &str) -> Result<Hash, HashProblem> {
    let mut fields = rest.split('$');
    let (Some(iterations), Some(salt), Some(hash), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(HashProblem::FieldCount {
            expected: "`$7$`, iterations, salt and hash",
        });
    };
    let iterations = iterations
        .parse::<u32>()
        .ok()
        .filter(|n| (PBKDF2_ITERATIONS_MIN..=PBKDF2_ITERATIONS_MAX).contains(n))
        .ok_or_else(|| HashProblem::Iterations {
            value: iterations.to_owned(),
            min: PBKDF2_ITERATIONS_MIN,
            max: PBKDF2_ITERATIONS_MAX,
        })?;
    let (salt, hash) = decode_salt_and_hash(salt, hash)?;
    Ok(Hash::Pbkdf2Sha512 {
        iterations,
        salt,
        hash,
    })
}

/// `<salt>$<hash>` after `$6$`.
fn parse_sha512(rest: &str) -> Result<Hash, HashProblem> {
    let mut fields = rest.split('$');
    let (Some(salt), Some(hash), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(HashProblem::FieldCount {
            expected: "`$6$`, salt and hash",
        });
    };
    let (salt, hash) = decode_salt_and_hash(salt, hash)?;
    Ok(Hash::Sha512 { salt, hash })
}

fn decode_salt_and_hash(
    salt: &str,
    hash: &str,
) -> Result<(Vec<u8>, [u8; HASH_BYTES]), HashProblem> {
    let salt = BASE64
        .decode(salt)
        .map_err(|_| HashProblem::Base64 { field: "salt" })?;
    if salt.len() != 12 && salt.len() != 64 {
        return Err(HashProblem::SaltLength { bytes: salt.len() });
    }
    let hash = BASE64
        .decode(hash)
        .map_err(|_| HashProblem::Base64 { field: "hash" })?;
    let hash = <[u8; HASH_BYTES]>::try_from(hash.as_slice())
        .map_err(|_| HashProblem::HashLength { bytes: hash.len() })?;
    Ok((salt, hash))
}

/// A whole `$argon2id$...` PHC string, with its costs bounded.
fn parse_argon2(text: &str) -> Result<Hash, HashProblem> {
    let phc_error = |error: phc::Error| HashProblem::Argon2 {
        what: error.to_string(),
    };
    let parsed = phc::PasswordHash::new(text).map_err(phc_error)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(HashProblem::Argon2Variant {
            algorithm: parsed.algorithm.as_str().to_owned(),
        });
    }
    let params = argon2::Params::try_from(&parsed).map_err(|error| HashProblem::Argon2 {
        what: error.to_string(),
    })?;
    for (parameter, value, max) in [
        ("m (memory, KiB)", params.m_cost(), ARGON2_MEMORY_KIB_MAX),
        ("t (passes)", params.t_cost(), ARGON2_PASSES_MAX),
        ("p (lanes)", params.p_cost(), ARGON2_LANES_MAX),
    ] {
        if value > max {
            return Err(HashProblem::Argon2Cost {
                parameter,
                value,
                max,
            });
        }
    }
    let version = match parsed.version {
        None => argon2::Version::default(),
        Some(version) => {
            argon2::Version::try_from(version).map_err(|error| HashProblem::Argon2 {
                what: error.to_string(),
            })?
        }
    };
    let (Some(salt), Some(hash)) = (&parsed.salt, &parsed.hash) else {
        return Err(HashProblem::Argon2 {
            what: String::from("salt or hash missing"),
        });
    };
    Ok(Hash::Argon2id {
        params,
        version,
        salt: salt.to_vec(),
        hash: hash.as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests;
