//! Goal: `docs/CONFORMANCE.md` stays true. Every MQTT 5.0 and 3.1.1 statement identifier listed
//! in `tests/conformance/ids-*.txt` has exactly one row in its version's table, no row names an
//! identifier outside the list, every row names a test or gives a reason, and every test a row
//! names exists: a `#[test]` function of that name in that file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const MAP: &str = "docs/CONFORMANCE.md";
/// A row without a test starts its check column with one of these, then says why (a row that
/// starts so may still name tests, of what the server does about it; it counts as a reason).
const REASONS: [&str; 5] = [
    "Client:",
    "Not applicable:",
    "Not testable:",
    "Choice:",
    "Deviation:",
];

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn ids(path: &str) -> BTreeSet<String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// One table row: its identifier, the tests it names (`file::function`), and its check text.
struct Row {
    id: String,
    tests: Vec<(String, String)>,
    check: String,
}

/// The rows under each `## ` heading that names a version ("MQTT 5.0", "MQTT 3.1.1").
fn sections(map: &str) -> BTreeMap<String, Vec<Row>> {
    let mut sections: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut current = None;
    for line in map.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            current = ["MQTT 5.0", "MQTT 3.1.1", "MQTT 3.1"]
                .into_iter()
                .find(|v| heading.starts_with(v) && !heading[v.len()..].starts_with('.'))
                .map(str::to_owned);
            continue;
        }
        let (Some(version), Some(rest)) = (&current, line.strip_prefix("| ")) else {
            continue;
        };
        let cells: Vec<&str> = rest.split(" | ").collect();
        let Some(id) = cells.first().map(|c| c.trim().trim_matches('`')) else {
            continue;
        };
        if !(id.starts_with("MQTT-") || id.starts_with("3.1-")) {
            continue;
        }
        let check = cells.last().map_or("", |c| c.trim_end_matches('|').trim());
        let tests = check
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|quoted| quoted.split_once("::"))
            .map(|(file, name)| (file.to_owned(), name.to_owned()))
            .collect();
        sections.entry(version.clone()).or_default().push(Row {
            id: id.to_owned(),
            tests,
            check: check.to_owned(),
        });
    }
    sections
}

/// Whether `file` holds a test function `name`: `fn name(` within a few lines after a test
/// attribute.
fn test_exists(file: &str, name: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().enumerate().any(|(at, line)| {
        let trimmed = line.trim_start();
        let declares = ["fn ", "async fn "].iter().any(|f| {
            trimmed
                .strip_prefix(f)
                .is_some_and(|r| r.starts_with(&format!("{name}(")))
        });
        declares
            && lines[at.saturating_sub(4)..at]
                .iter()
                .any(|l| l.contains("#[test]") || l.contains("#[tokio::test"))
    })
}

#[test]
fn every_identifier_has_one_row_with_a_test_or_a_reason() {
    let map = read(MAP);
    let sections = sections(&map);
    let mut problems = Vec::new();
    for (version, list) in [
        ("MQTT 5.0", "tests/conformance/ids-5.0.txt"),
        ("MQTT 3.1.1", "tests/conformance/ids-3.1.1.txt"),
    ] {
        let expected = ids(list);
        assert!(
            expected.len() > 100,
            "{list}: only {} identifiers",
            expected.len()
        );
        let rows = sections.get(version).map(Vec::as_slice).unwrap_or_default();
        let mut seen = BTreeSet::new();
        for row in rows {
            if !seen.insert(row.id.clone()) {
                problems.push(format!("{version}: {} has two rows", row.id));
            }
            if !expected.contains(&row.id) {
                problems.push(format!("{version}: {} is not in {list}", row.id));
            }
        }
        for missing in expected.difference(&seen) {
            problems.push(format!("{version}: no row for {missing}"));
        }
    }
    for (version, rows) in &sections {
        for row in rows {
            if row.tests.is_empty() && !REASONS.iter().any(|r| row.check.starts_with(r)) {
                problems.push(format!(
                    "{version}: {} names no test and gives no reason (start with one of {REASONS:?})",
                    row.id
                ));
            }
            for (file, name) in &row.tests {
                if !test_exists(file, name) {
                    problems.push(format!(
                        "{version}: {} names `{file}::{name}`, no such test",
                        row.id
                    ));
                }
            }
        }
    }
    assert!(
        sections.contains_key("MQTT 3.1"),
        "{MAP}: no section for the 3.1 differences"
    );
    // The summary's counts are those of the tables.
    for (version, rows) in &sections {
        if version == "MQTT 3.1" {
            continue;
        }
        let tested = rows
            .iter()
            .filter(|r| !REASONS.iter().any(|p| r.check.starts_with(p)))
            .count();
        let line = format!(
            "| {version} | {} | {tested} | {} |",
            rows.len(),
            rows.len() - tested
        );
        if !map.lines().any(|l| l == line) {
            problems.push(format!("summary: expected the line `{line}`"));
        }
    }
    assert!(problems.is_empty(), "{MAP}:\n{}", problems.join("\n"));
}

/// The checker itself: a row naming a test that is not there, or no test and no reason, fails.
#[test]
fn the_checker_finds_missing_tests_and_reasons() {
    let map = "## MQTT 5.0\n\
        | ID | Statement | Check |\n\
        |---|---|---|\n\
        | MQTT-1.5.4-1 | x | `tests/conformance/connack.rs::v31_connack_has_no_session_present_flag` |\n\
        | MQTT-1.5.4-2 | x | `tests/conformance/connack.rs::no_such_test` |\n\
        | MQTT-1.5.4-3 | x | Client: the sender's duty |\n\
        | MQTT-1.5.5-1 | x | nothing |\n";
    let rows = &sections(map)["MQTT 5.0"];
    assert_eq!(rows.len(), 4);
    assert!(test_exists(&rows[0].tests[0].0, &rows[0].tests[0].1));
    assert!(!test_exists(&rows[1].tests[0].0, &rows[1].tests[0].1));
    assert!(rows[2].tests.is_empty() && rows[2].check.starts_with("Client:"));
    assert!(rows[3].tests.is_empty() && !REASONS.iter().any(|r| rows[3].check.starts_with(r)));
}
