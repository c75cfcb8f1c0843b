//! What can be wrong with a configuration, said so that an operator can fix it: every message
//! names where the value came from (file and line, or environment variable), the dotted key, what
//! is wrong and what to write instead.

use std::fmt;

use super::check::range_hint;

/// A configuration that cannot be used. The broker prints it and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "{path}: cannot read the config file: {source}; check the path and its permissions, \
         or run without --config to use the built-in defaults"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML (or repeats a key or a table).
    #[error(
        "{location}: not valid TOML: {message}; fix the syntax (compare with \
         `ringmq print-default-config`)"
    )]
    Syntax { location: String, message: String },
    /// A key that is not part of the configuration, usually a typo.
    #[error("{location}: unknown key `{key}`; valid keys in {table}: {valid}")]
    UnknownKey {
        location: String,
        key: String,
        table: String,
        valid: String,
    },
    /// A value of the wrong type, or a word that is not one of the allowed ones.
    #[error("{location}: {key}: {message}; {hint}")]
    WrongType {
        location: String,
        key: String,
        message: String,
        hint: String,
    },
    /// A value out of its range, or one that contradicts another key (from `Config::validate`).
    #[error("{}{key} = {value}: {problem}; {fix}", Prefix(.location))]
    Invalid {
        location: String,
        key: String,
        value: String,
        problem: String,
        fix: String,
    },
    /// A `RINGMQ_` environment variable whose name does not spell a key.
    #[error(
        "environment variable {name}: not of the form RINGMQ_<SECTION>__<KEY>; separate the \
         section and the key with a double underscore, e.g. RINGMQ_LIMITS__PACKET_BYTES_MAX=2097152"
    )]
    EnvironmentName { name: String },
}

impl ConfigError {
    /// A value that breaks a rule of `Config::validate`; the location is filled in by whoever
    /// knows where the value came from.
    pub(super) fn invalid(
        key: impl Into<String>,
        value: impl fmt::Display,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            location: String::new(),
            key: key.into(),
            value: value.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The dotted key this error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::WrongType { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. }
            | ConfigError::Syntax { .. }
            | ConfigError::EnvironmentName { .. } => None,
        }
    }

    /// Sets where an `Invalid` value came from (a file, an environment variable).
    pub(super) fn located(mut self, origin: &str) -> ConfigError {
        if let ConfigError::Invalid { location, .. } = &mut self {
            *location = origin.to_owned();
        }
        self
    }

    /// Converts a serde error met while reading a typed `Config` out of `text` (or out of the
    /// environment overrides, where `text` is `None` and `location` names the variable).
    pub(super) fn from_serde(
        error: serde_path_to_error::Error<toml::de::Error>,
        location: &str,
    ) -> ConfigError {
        let key = error.path().to_string();
        let message = error.inner().message().replace('\n', ": ");
        if let Some(valid) = unknown_field_alternatives(&message) {
            let table = match key.rsplit_once('.') {
                Some((table, _)) => format!("[{table}]"),
                None => String::from("the top level"),
            };
            return ConfigError::UnknownKey {
                location: location.to_owned(),
                key,
                table,
                valid,
            };
        }
        let hint = type_hint(&key, &message);
        ConfigError::WrongType {
            location: location.to_owned(),
            key,
            message,
            hint,
        }
    }
}

/// `file:line` of a byte offset into the text, for messages.
pub(super) fn file_line(origin: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return origin.to_owned();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    format!("{origin}:{line}")
}

/// The valid keys listed in serde's "unknown field `x`, expected one of `a`, `b`" message,
/// as "a, b"; `None` when the message is about something else.
fn unknown_field_alternatives(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (_, expected) = rest.split_once("`, ")?;
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if names.is_empty() {
        return Some(String::from("(none)"));
    }
    Some(names.join(", "))
}

/// What to write instead, for a value of the wrong type at `key`.
fn type_hint(key: &str, message: &str) -> String {
    let pattern = key_pattern(key);
    if let Some(hint) = range_hint(&pattern) {
        return hint;
    }
    let hint = match pattern.as_str() {
        "runtime.shards" => "write \"auto\" for one shard per CPU, or a number from 1 to 256",
        "runtime.cpus" => "write \"all\", or a list of CPU numbers like [0, 2, 4]",
        "listeners.tcp.<name>.bind" | "listeners.tls.<name>.bind" => {
            "write an IP address and port in quotes, e.g. \"0.0.0.0:1883\" or \"[::]:1883\" \
             (host names are not resolved)"
        }
        "listeners.tcp.<name>.backlog" | "listeners.tls.<name>.backlog" => {
            "write a whole number from 1 to 65535, e.g. 1024"
        }
        "listeners.tcp.<name>.shard_port_base" | "listeners.tls.<name>.shard_port_base" => {
            "write a port number, e.g. 20000"
        }
        "listeners.tls.<name>.cipher_suites" | "listeners.tls.<name>.alpn" => {
            "write a list of strings, e.g. [\"mqtt\"]"
        }
        "auth.denied_publish_v3" => "write \"acknowledge\" or \"disconnect\"",
        "log.level" => "write one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        "log.format" => "write \"text\" or \"json\"",
        "limits.outbox_drop_policy" => "write \"drop_new\" or \"drop_oldest\"",
        "bridges.<name>.version" => "write \"5.0\" or \"3.1.1\"",
        "bridges.<name>.topics" => {
            "a topic rule has topic (a string), direction (\"out\", \"in\" or \"both\"), qos \
             (0, 1 or 2), local_prefix and remote_prefix (strings)"
        }
        _ if message.contains("expected a boolean") => "write true or false",
        _ if message.contains("expected a string") => "write a string in double quotes",
        _ => "compare with the documented default in `ringmq print-default-config`",
    };
    hint.to_owned()
}

/// `key` with listener names replaced by `<name>` and list indices dropped, so that it can be
/// looked up among the documented keys.
pub(super) fn key_pattern(key: &str) -> String {
    let key = key.split('[').next().unwrap_or(key);
    let mut segments: Vec<&str> = key.split('.').collect();
    if segments.first() == Some(&"listeners")
        && let Some(name) = segments.get_mut(2)
    {
        *name = "<name>";
    }
    if segments.first() == Some(&"bridges")
        && let Some(name) = segments.get_mut(1)
    {
        *name = "<name>";
    }
    segments.join(".")
}

/// Prints `location: ` before a message, or nothing when the location is not known.
struct Prefix<'a>(&'a String);

impl fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// Refuses a client certificate without its key, or a key without its certificate, naming the
/// one missing: `cert` and `key` are the names shown (with whether each is set), `prefix` what
/// makes them a full key (`bridges.NAME.`, or empty when the names are full already).
pub(super) fn cert_and_key_together(
    prefix: &str,
    cert: (&str, bool),
    key: (&str, bool),
) -> Result<(), ConfigError> {
    if cert.1 == key.1 {
        return Ok(());
    }
    let missing = if cert.1 { key.0 } else { cert.0 };
    Err(ConfigError::invalid(
        format!("{prefix}{missing}"),
        "(not set)",
        format!("a client certificate needs both {} and {}", cert.0, key.0),
        format!("set {missing} too"),
    ))
}
