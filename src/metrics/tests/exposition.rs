//! A parser for the subset of the text format 0.0.4 the renderer writes, independent of it.

use std::collections::BTreeMap;

/// One parsed exposition: samples by `name{label="v",...}` (labels sorted), and each family's
/// declared type.
#[derive(Debug, Default)]
pub(super) struct Exposition {
    pub samples: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
    /// Family of each sample line, in order, to check that families are contiguous.
    pub order: Vec<String>,
}

impl Exposition {
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = key(name, labels);
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key}"))
    }

    /// All samples of `name` whose labels include `filter`, keyed by their full key.
    pub fn matching(&self, name: &str, filter: (&str, &str)) -> Vec<(String, f64)> {
        let needle = format!("{}=\"{}\"", filter.0, filter.1);
        self.samples
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(&needle))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

pub(super) fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// A parser for the subset of format 0.0.4 the renderer writes: no escapes beyond `\"`, no
/// timestamps. Panics (failing the test) on anything it does not understand.
pub(super) fn parse(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            let previous = exposition.types.insert(name.to_string(), kind.to_string());
            assert!(previous.is_none(), "family {name} declared twice");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "odd line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().expect("numeric value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let labels: Vec<(&str, &str)> = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("label=value");
                (k, v.trim_matches('"'))
            })
            .collect();
        let family = family_of(name, &exposition.types);
        assert!(
            exposition.types.contains_key(&family),
            "sample {name} before its TYPE"
        );
        exposition.order.push(family);
        let previous = exposition.samples.insert(key(name, &labels), value);
        assert!(previous.is_none(), "duplicate series {line}");
    }
    exposition
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|kind| kind == "histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}
