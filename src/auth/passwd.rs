//! `ringmq passwd`: Mosquitto's `mosquitto_passwd` for ringmq's password files.
//!
//! `-c` creates (replaces) the file, `-b` takes the password from the command line, `-D` deletes
//! the user, `-H argon2id|sha512-pbkdf2` picks the hash of the new entry. Without `-b` the password
//! is read twice from the terminal without echo. Other lines (comments, other users, hash types
//! we only read) are kept as they are. The file is replaced atomically (a temporary file in the
//! same directory, fsync, rename, fsync of the directory) with mode 0600.

use super::password::{BASE64, parse_line};
use argon2::password_hash::PasswordHasher;
use base64::Engine;
use rand::TryRng;
use sha2::Sha512;
use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Argon2id memory cost of new entries, in KiB: Mosquitto 2.1's (and OWASP's) 46 MiB.
pub const ARGON2_MEMORY_KIB: u32 = 47_104;
/// Argon2id passes of new entries (Mosquitto 2.1).
pub const ARGON2_PASSES: u32 = 1;
/// Argon2id lanes of new entries (Mosquitto 2.1).
pub const ARGON2_LANES: u32 = 1;
/// Argon2id salt and output lengths of new entries, libargon2's defaults.
const ARGON2_SALT_BYTES: usize = 16;
const ARGON2_HASH_BYTES: usize = 32;
/// PBKDF2 iterations and salt of new `$7$` entries (Mosquitto 2.1).
pub const PBKDF2_ITERATIONS: u32 = 1000;
const PBKDF2_SALT_BYTES: usize = 64;
/// Longest password accepted, in bytes (an MQTT password is at most 65,535 bytes).
pub const PASSWORD_BYTES_MAX: usize = 65_535;

/// The hash written for a new or updated entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HashAlgorithm {
    /// `$argon2id$`: Mosquitto 2.1's default (t=1, m=47104 KiB, p=1).
    #[default]
    Argon2id,
    /// `$7$`: PBKDF2-HMAC-SHA512, 1000 iterations, 64-byte salt; readable by Mosquitto 2.0.
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
}

/// The command line of `ringmq passwd`, in `mosquitto_passwd`'s words. The binary adds it as a
/// subcommand and calls [`PasswdArgs::run`].
#[derive(Debug, Clone, clap::Args)]
pub struct PasswdArgs {
    /// Create a new password file, replacing an existing one.
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,
    /// Batch mode: the password is the last argument instead of a prompt.
    #[arg(short = 'b', requires = "password", conflicts_with = "delete")]
    pub batch: bool,
    /// Delete the user instead of adding or updating it.
    #[arg(short = 'D')]
    pub delete: bool,
    /// Hash of the new entry.
    #[arg(short = 'H', value_enum, default_value_t = HashAlgorithm::Argon2id)]
    pub hash: HashAlgorithm,
    /// The password file.
    pub file: PathBuf,
    /// The user to add, update or delete.
    pub username: String,
    /// The password (with `-b` only).
    #[arg(requires = "batch")]
    pub password: Option<String>,
}

impl PasswdArgs {
    pub fn run(&self) -> Result<PasswdOutcome, PasswdError> {
        let options = PasswdOptions {
            create: self.create,
            delete: self.delete,
            password: self.password.clone(),
            hash: self.hash,
        };
        passwd(&self.file, &self.username, &options)
    }
}

/// What [`passwd`] does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PasswdOptions {
    /// Start from an empty file instead of the existing one (`-c`).
    pub create: bool,
    /// Remove the user (`-D`).
    pub delete: bool,
    /// The password (`-b`); `None` prompts twice on the terminal.
    pub password: Option<String>,
    /// Hash of the new entry (`-H`).
    pub hash: HashAlgorithm,
}

/// What [`passwd`] did to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswdOutcome {
    Added,
    Updated,
    Deleted,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("{path}: cannot read: {source} (use -c to create a new file)")]
    Read { path: String, source: io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: String, source: io::Error },
    #[error("{path}: larger than {bytes_max} bytes")]
    TooLarge { path: String, bytes_max: u64 },
    #[error("{path}: {source}")]
    File {
        path: String,
        source: super::AuthFileError,
    },
    #[error("invalid username: {why}")]
    Username { why: &'static str },
    #[error("invalid password: {why}")]
    Password { why: &'static str },
    #[error("user `{username}` is not in {path}")]
    NoSuchUser { username: String, path: String },
    #[error("-c and -D cannot be used together")]
    CreateAndDelete,
    #[error("no terminal to ask for the password on; pass it with -b")]
    NoTerminal,
    #[error("cannot read the password from the terminal: {source}")]
    Prompt { source: io::Error },
    #[error("the passwords do not match")]
    Mismatch,
    #[error("the OS random generator failed: {what}")]
    Random { what: String },
    #[error("hashing failed: {what}")]
    Hash { what: String },
}

/// Adds, updates or deletes `username` in the password file at `file`.
pub fn passwd(
    file: &Path,
    username: &str,
    options: &PasswdOptions,
) -> Result<PasswdOutcome, PasswdError> {
    if options.create && options.delete {
        return Err(PasswdError::CreateAndDelete);
    }
    check_username(username)?;
    if let Some(password) = &options.password {
        check_password(password.as_bytes())?;
    }
    let path = file.display().to_string();
    let existing = if options.create {
        String::new()
    } else {
        read_existing(file, &path)?
    };
    let (text, outcome) = if options.delete {
        let text = remove_user(&existing, username).ok_or_else(|| PasswdError::NoSuchUser {
            username: username.to_owned(),
            path: path.clone(),
        })?;
        (text, PasswdOutcome::Deleted)
    } else {
        let password = match &options.password {
            Some(password) => password.clone(),
            None => prompt_twice()?,
        };
        check_password(password.as_bytes())?;
        let hash = hash_password(password.as_bytes(), options.hash)?;
        set_user(&existing, username, &hash)
    };
    write_atomically(file, text.as_bytes())
        .map_err(|source| PasswdError::Write { path, source })?;
    Ok(outcome)
}

/// A new hash string for `password`, as written to the file.
pub fn hash_password(password: &[u8], algorithm: HashAlgorithm) -> Result<String, PasswdError> {
    match algorithm {
        HashAlgorithm::Argon2id => {
            let params = argon2::Params::new(
                ARGON2_MEMORY_KIB,
                ARGON2_PASSES,
                ARGON2_LANES,
                Some(ARGON2_HASH_BYTES),
            )
            .map_err(|error| PasswdError::Hash {
                what: error.to_string(),
            })?;
            hash_argon2id(password, params)
        }
        HashAlgorithm::Sha512Pbkdf2 => {
            let salt = random_bytes::<PBKDF2_SALT_BYTES>()?;
            let mut hash = [0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, PBKDF2_ITERATIONS, &mut hash);
            Ok(format!(
                "$7${PBKDF2_ITERATIONS}${}${}",
                BASE64.encode(salt),
                BASE64.encode(hash)
            ))
        }
    }
}

/// An `$argon2id$` PHC string with the given costs (tests use small ones).
pub(crate) fn hash_argon2id(
    password: &[u8],
    params: argon2::Params,
) -> Result<String, PasswdError> {
    let salt = random_bytes::<ARGON2_SALT_BYTES>()?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = hasher
        .hash_password_with_salt(password, &salt)
        .map_err(|error| PasswdError::Hash {
            what: error.to_string(),
        })?;
    Ok(hash.to_string())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PasswdError> {
    let mut bytes = [0u8; N];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|error| PasswdError::Random {
            what: error.to_string(),
        })?;
    Ok(bytes)
}

fn check_username(username: &str) -> Result<(), PasswdError> {
    let why = if username.is_empty() {
        "empty"
    } else if username.contains(':') {
        "contains `:`, which separates the username from the hash"
    } else if username.chars().any(char::is_control) {
        "contains a control character"
    } else if username.trim_start().starts_with('#') {
        "starts with `#`, which would make the line a comment"
    } else if username.trim().is_empty() {
        "only white space"
    } else if username.len() > 65_535 {
        "longer than 65,535 bytes"
    } else {
        return Ok(());
    };
    Err(PasswdError::Username { why })
}

fn check_password(password: &[u8]) -> Result<(), PasswdError> {
    if password.is_empty() {
        return Err(PasswdError::Password { why: "empty" });
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(PasswdError::Password {
            why: "longer than 65,535 bytes",
        });
    }
    Ok(())
}

fn prompt_twice() -> Result<String, PasswdError> {
    if !io::stdin().is_terminal() {
        return Err(PasswdError::NoTerminal);
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text).map_err(|source| PasswdError::Prompt { source })
    };
    let first = prompt("Password: ")?;
    let second = prompt("Reenter password: ")?;
    if first != second {
        return Err(PasswdError::Mismatch);
    }
    Ok(first)
}

fn read_existing(file: &Path, path: &str) -> Result<String, PasswdError> {
    let text = super::read_file(file).map_err(|error| match error {
        super::AuthFileError::Read { source, .. } => PasswdError::Read {
            path: path.to_owned(),
            source,
        },
        super::AuthFileError::TooLarge { bytes_max, .. } => PasswdError::TooLarge {
            path: path.to_owned(),
            bytes_max,
        },
        other => PasswdError::File {
            path: path.to_owned(),
            source: other,
        },
    })?;
    Ok(text)
}

/// Lines of `text` that are entries, with the username of each (`None` for other lines).
fn entry_user(line: &str) -> Option<&str> {
    parse_line(line.strip_suffix('\r').unwrap_or(line))
        .ok()
        .flatten()
        .map(|(user, _)| user)
}

/// `text` with the entry of `username` replaced, or appended if there is none.
fn set_user(text: &str, username: &str, hash: &str) -> (String, PasswdOutcome) {
    let entry = format!("{username}:{hash}");
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    let mut outcome = PasswdOutcome::Added;
    for line in text.lines() {
        if entry_user(line) == Some(username) && outcome == PasswdOutcome::Added {
            out.push_str(&entry);
            outcome = PasswdOutcome::Updated;
        } else if entry_user(line) != Some(username) {
            out.push_str(line);
        } else {
            // A second entry for the same user would make the file unreadable; drop it.
            continue;
        }
        out.push('\n');
    }
    if outcome == PasswdOutcome::Added {
        out.push_str(&entry);
        out.push('\n');
    }
    (out, outcome)
}

/// `text` without the entries of `username`, or `None` if it has none.
fn remove_user(text: &str, username: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for line in text.lines() {
        if entry_user(line) == Some(username) {
            found = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    found.then_some(out)
}

/// Replaces `file` with `bytes`: a reader sees the old file or the new one, never a mix, and a
/// crash leaves one of the two.
fn write_atomically(file: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = file
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = directory.join(temporary_name);
    // A temporary file left by a crashed run of this process id is ours to replace.
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let result = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&temporary, file)?;
        std::fs::File::open(directory)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests;
