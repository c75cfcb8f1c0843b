//! The documentation and the dashboard name only metrics the renderer writes, and the
//! documentation names every one it writes.

use std::collections::BTreeSet;

use super::{render, two_shards};

const OBSERVABILITY: &str = include_str!("../../../docs/OBSERVABILITY.md");
const DASHBOARD: &str = include_str!("../../../docs/grafana/ringmq.json");

/// Every `ringmq_...` identifier in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("ringmq_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The shards' families, the bridges' and, on a cluster node, the link's.
fn families() -> BTreeSet<String> {
    let mut families: BTreeSet<String> = render(&two_shards()).types.keys().cloned().collect();
    let cluster = crate::metrics::render_cluster(&crate::cluster::ClusterStats::default());
    families.extend(cluster.lines().filter_map(|line| {
        let rest = line.strip_prefix("# TYPE ")?;
        rest.split(' ').next().map(str::to_owned)
    }));
    // The bridges' families, written after the shards' when a bridge runs.
    let bridge = std::sync::Arc::new(crate::metrics::bridge::BridgeStats::new("b"));
    let text = crate::metrics::bridge::render(&[bridge]);
    families.extend(text.lines().filter_map(|line| {
        let name = line.strip_prefix("# TYPE ")?.split(' ').next()?;
        Some(name.to_owned())
    }));
    families
}

/// Whether `name` is a family or a histogram's series of one.
fn exported(name: &str, families: &BTreeSet<String>) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    families.contains(name) || families.contains(base)
}

#[test]
fn every_family_is_documented() {
    let documented = names_in(OBSERVABILITY);
    for family in families() {
        assert!(
            documented.contains(&family),
            "{family} missing from OBSERVABILITY.md"
        );
    }
}

#[test]
fn documentation_and_dashboard_name_real_metrics() {
    let families = families();
    for (source, names) in [
        ("OBSERVABILITY.md", names_in(OBSERVABILITY)),
        ("dashboard", names_in(DASHBOARD)),
    ] {
        for name in names {
            let name = name.trim_end_matches('_');
            // The prefix on its own, where the conventions are described.
            if name == "ringmq" {
                continue;
            }
            assert!(
                exported(name, &families),
                "{source} names {name}, which is not exported"
            );
        }
    }
}
