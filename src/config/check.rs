//! The range rule every numeric key follows, so each section can list its ranges as a table next
//! to its fields and the error text stays the same everywhere.

use super::{Config, ConfigError, auth, limits, mqtt, observability, runtime, session};

/// The allowed values of one numeric key. No range includes "0 means unlimited": every limit is a
/// finite number, and 0 is allowed only where it has a meaning of its own.
pub(super) struct Range {
    /// Dotted key, as in the file.
    pub key: &'static str,
    pub value: fn(&Config) -> u64,
    pub min: u64,
    pub max: u64,
    /// Plural unit, shown after the bounds ("bytes", "messages"); empty for plain numbers.
    pub unit: &'static str,
    /// How to choose a good value, with an example.
    pub fix: &'static str,
}

impl Range {
    fn check(&self, config: &Config) -> Result<(), ConfigError> {
        let value = (self.value)(config);
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(ConfigError::invalid(
            self.key,
            value,
            self.requirement(),
            self.fix,
        ))
    }

    fn requirement(&self) -> String {
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        format!("must be between {} and {}{unit}", self.min, self.max)
    }
}

/// Every section's range table.
pub(super) const TABLES: [&[Range]; 8] = [
    runtime::RANGES,
    mqtt::RANGES,
    session::RANGES,
    observability::RANGES,
    limits::RANGES,
    auth::RANGES,
    super::persistence::RANGES,
    super::cluster::RANGES,
];

/// Checks every numeric key against its range.
pub(super) fn ranges(config: &Config) -> Result<(), ConfigError> {
    TABLES
        .iter()
        .flat_map(|table| table.iter())
        .try_for_each(|range| range.check(config))
}

/// "write a whole number between …; <fix>" for a key that has a range, for type errors.
pub(super) fn range_hint(key: &str) -> Option<String> {
    let range = TABLES
        .iter()
        .flat_map(|table| table.iter())
        .find(|range| range.key == key)?;
    Some(format!(
        "write a whole number that {}; {}",
        range.requirement(),
        range.fix
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_in_range_and_keys_are_unique() {
        let config = Config::default();
        let mut keys = std::collections::BTreeSet::new();
        for range in TABLES.iter().flat_map(|table| table.iter()) {
            assert!(keys.insert(range.key), "{} listed twice", range.key);
            assert!(range.min <= range.max, "{}", range.key);
            range.check(&config).unwrap();
        }
    }
}
