//! Environment overrides: `RINGMQ_<SECTION>__<KEY>=<value>` sets one key after the file is read,
//! the way EMQX reads `EMQX_<PATH>` (containers and systemd units set variables more easily than
//! they edit files). Path segments are separated by a double underscore and lowercased, so
//! `RINGMQ_LISTENERS__TCP__DEFAULT__BIND` sets `listeners.tcp.default.bind`. The value is read as
//! a TOML value (`4`, `true`, `[0, 1]`, `"auto"`); a value that is not TOML is taken as a string,
//! so `RINGMQ_RUNTIME__SHARDS=auto` needs no quotes.

use super::error::key_pattern;
use super::{Config, ConfigError};

pub(super) const PREFIX: &str = "RINGMQ_";

/// One `RINGMQ_` variable, as a key path and a value.
pub(super) struct Override {
    /// The variable's name, for messages.
    pub name: String,
    pub raw: String,
    /// The dotted key, e.g. `limits.packet_bytes_max`.
    pub key: String,
    pub value: toml::Value,
}

/// The overrides among `variables`; every variable that starts with `RINGMQ_` must name a key.
pub(super) fn overrides(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut overrides: Vec<Override> = variables
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .map(|(name, raw)| parse(name, raw))
        .collect::<Result<_, _>>()?;
    // The environment comes in no particular order; sort it so errors are reproducible.
    overrides.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(overrides)
}

fn parse(name: String, raw: String) -> Result<Override, ConfigError> {
    let path = name.get(PREFIX.len()..).unwrap_or_default();
    let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if segments.len() < 2 || segments.iter().any(String::is_empty) {
        return Err(ConfigError::EnvironmentName { name });
    }
    let value = toml_value(&raw);
    Ok(Override {
        name,
        raw,
        key: segments.join("."),
        value,
    })
}

/// `raw` read as a TOML value, or as a string when it is not one.
fn toml_value(raw: &str) -> toml::Value {
    let parsed = format!("value = {raw}").parse::<toml::Table>();
    match parsed {
        Ok(mut table) if table.len() == 1 => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        _ => toml::Value::String(raw.to_owned()),
    }
}

/// `config` with the overrides applied (not yet validated).
pub(super) fn apply(config: Config, overrides: &[Override]) -> Result<Config, ConfigError> {
    if overrides.is_empty() {
        return Ok(config);
    }
    // Every value of a Config came from TOML or from our defaults, so it serializes back; failing
    // here is our own bug, not the operator's.
    let mut table = match toml::Table::try_from(&config) {
        Ok(table) => table,
        Err(error) => panic!("the configuration does not serialize to TOML: {error}"),
    };
    for each in overrides {
        set(&mut table, each)?;
    }
    let deserializer = toml::Value::Table(table);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let blamed = overrides.iter().find(|each| related(&each.key, &key));
        let location = match blamed {
            Some(each) => location(each),
            None => String::from("environment overrides"),
        };
        ConfigError::from_serde(error, &location)
    })
}

/// Puts the override into the table, making the tables on its path.
fn set(table: &mut toml::Table, each: &Override) -> Result<(), ConfigError> {
    let mut current = table;
    let mut segments = each.key.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            current.insert(segment.to_owned(), each.value.clone());
            return Ok(());
        }
        let next = current
            .entry(segment.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = next else {
            return Err(ConfigError::UnknownKey {
                location: location(each),
                key: each.key.clone(),
                table: format!("[{}]", key_pattern(&each.key)),
                valid: format!("(none: `{segment}` is a value, not a table)"),
            });
        };
        current = next;
    }
    Ok(())
}

/// Whether an error at `error_key` is about the override of `key`.
fn related(key: &str, error_key: &str) -> bool {
    error_key == key
        || error_key.starts_with(&format!("{key}.")) // inside a table value
        || error_key.starts_with(&format!("{key}[")) // inside a list value
        || key.starts_with(&format!("{error_key}.")) // a table on its path
}

/// How messages name where an override came from.
pub(super) fn location(each: &Override) -> String {
    format!("environment variable {}={}", each.name, each.raw)
}
