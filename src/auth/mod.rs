//! Authentication and authorization from Mosquitto's files, read unchanged.
//!
//! - [`password`]: the `password_file` written by `mosquitto_passwd` (`$6$`, `$7$`, `$argon2id$`
//!   entries) and [`PasswordFile::verify`], in constant time, with unknown users costing as much as
//!   a wrong password.
//! - [`passwd`]: the `ringmq passwd` command (`mosquitto_passwd`'s `-c`, `-b`, `-D`, `-H`).
//! - [`acl`]: the `acl_file` (`topic`, `user`, `pattern` with `%c` / `%u`), deny before grant, an
//!   empty file denies everything (CVE-2018-12550), `$SYS` is never writable.
//!
//! Everything here is synchronous and owns no I/O except `load` (read a file with a size limit)
//! and `passwd` (rewrite a file atomically). The formats are documented in `docs/SECURITY.md`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod acl;
mod error;
pub mod passwd;
pub mod password;

pub use acl::{Access, Acl, ClientIdentity};
pub use error::{AuthFileError, Problem};
pub use passwd::{HashAlgorithm, PasswdArgs, PasswdError, PasswdOptions, PasswdOutcome, passwd};
pub use password::PasswordFile;

use std::io::Read;
use std::path::Path;

/// Largest password or ACL file read, in bytes. Both are loaded whole into memory at start and on
/// reload; a file this size holds about a million entries.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Most lines in a password or ACL file.
pub const FILE_LINES_MAX: usize = 1_000_000;

/// Longest line in a password or ACL file, in bytes: a topic (at most 65,535 bytes in MQTT) after a
/// keyword and an access word, or a username (same bound) and a hash.
pub const LINE_BYTES_MAX: usize = 65_535 + 1024;

/// Reads a whole file as UTF-8, refusing files larger than [`FILE_BYTES_MAX`].
pub(crate) fn read_file(path: &Path) -> Result<String, AuthFileError> {
    let origin = path.display().to_string();
    let read_error = |source| AuthFileError::Read {
        origin: origin.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(AuthFileError::TooLarge {
            origin,
            bytes_max: FILE_BYTES_MAX,
        });
    }
    String::from_utf8(bytes).map_err(|error| AuthFileError::NotUtf8 {
        origin,
        offset: error.utf8_error().valid_up_to(),
    })
}

/// The lines of a file numbered from 1, with the line limits checked and a trailing `\r` removed.
pub(crate) fn numbered_lines<'a>(
    text: &'a str,
    origin: &'a str,
) -> impl Iterator<Item = Result<(usize, &'a str), AuthFileError>> + 'a {
    text.lines().enumerate().map(move |(index, line)| {
        let number = index + 1;
        let line_error = |problem| AuthFileError::Line {
            origin: origin.to_owned(),
            line: number,
            problem,
        };
        if number > FILE_LINES_MAX {
            return Err(line_error(Problem::TooManyLines {
                lines_max: FILE_LINES_MAX,
            }));
        }
        if line.len() > LINE_BYTES_MAX {
            return Err(line_error(Problem::LineTooLong {
                bytes_max: LINE_BYTES_MAX,
            }));
        }
        Ok((number, line.strip_suffix('\r').unwrap_or(line)))
    })
}
