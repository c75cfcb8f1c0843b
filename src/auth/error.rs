//! Errors of the password and ACL file parsers: each names the file, the line and what is wrong.

use std::io;

/// A password or ACL file that cannot be used. The broker refuses to start (or keeps the previous
/// file on reload) and prints this.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        #[source]
        source: io::Error,
    },
    #[error("{origin}: larger than {bytes_max} bytes")]
    TooLarge { origin: String, bytes_max: u64 },
    #[error("{origin}: not UTF-8 text (byte {offset})")]
    NotUtf8 { origin: String, offset: usize },
    #[error("{origin}:{line}: {problem}")]
    Line {
        origin: String,
        line: usize,
        problem: Problem,
    },
}

impl AuthFileError {
    /// The problem on a line, if the error is about one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            AuthFileError::Line { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// What is wrong with one line of a password or ACL file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("more than {lines_max} lines")]
    TooManyLines { lines_max: usize },
    #[error("line longer than {bytes_max} bytes")]
    LineTooLong { bytes_max: usize },
    // Password file.
    #[error("expected `username:hash`, found no `:`")]
    MissingColon,
    #[error("empty username before `:`")]
    EmptyUsername,
    #[error("user `{username}` has no password hash after `:`")]
    EmptyHash { username: String },
    #[error("user `{username}` appears twice (first on line {first_line})")]
    DuplicateUser { username: String, first_line: usize },
    #[error(
        "user `{username}` has a plain-text password; hash the file with \
         `mosquitto_passwd -U FILE` or set it again with `ringmq passwd FILE {username}`"
    )]
    PlainText { username: String },
    #[error(
        "user `{username}`: unsupported hash type `{prefix}` \
         (expected `$7$`, `$6$` or `$argon2id$`)"
    )]
    UnknownHashType { username: String, prefix: String },
    #[error("user `{username}`: {what}")]
    BadHash { username: String, what: HashProblem },
    // ACL file.
    #[error("unknown keyword `{word}` (expected `topic`, `pattern` or `user`)")]
    UnknownKeyword { word: String },
    #[error("`{keyword}` needs a topic")]
    MissingTopic { keyword: &'static str },
    #[error("`{word}` is not an access type (expected `read`, `write`, `readwrite` or `deny`)")]
    UnknownAccess { word: String },
    #[error("`user` needs a username")]
    MissingUsername,
    #[error("invalid topic filter `{filter}`: {why}")]
    InvalidFilter { filter: String, why: &'static str },
    #[error("`{level}`: `%c` and `%u` must fill a whole topic level, as in `sensor/%u/data`")]
    PartialSubstitution { level: String },
}

/// What is wrong with a password hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashProblem {
    #[error("expected {expected} fields separated by `$`")]
    FieldCount { expected: &'static str },
    #[error("the {field} is not valid base64")]
    Base64 { field: &'static str },
    #[error("salt of {bytes} bytes (expected 12 or 64)")]
    SaltLength { bytes: usize },
    #[error("hash of {bytes} bytes (expected 64)")]
    HashLength { bytes: usize },
    #[error("iteration count `{value}` is not a number from {min} to {max}")]
    Iterations { value: String, min: u32, max: u32 },
    #[error("not a valid argon2 PHC string: {what}")]
    Argon2 { what: String },
    #[error("only argon2id is supported, found `{algorithm}`")]
    Argon2Variant { algorithm: String },
    #[error("argon2 {parameter} = {value} is above the limit of {max}")]
    Argon2Cost {
        parameter: &'static str,
        value: u32,
        max: u32,
    },
}
