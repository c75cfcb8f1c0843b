//! Running the `ringmq-bench` binary and reading its `--json` report back.

use serde_json::Value;
use std::process::{Command, Output};

/// Runs `ringmq-bench` with `args` and `--json`: its output and its report, if it wrote one.
pub fn run(name: &str, args: &[&str]) -> (Output, Option<Value>) {
    let json =
        std::env::temp_dir().join(format!("ringmq-bench-{}-{name}.json", std::process::id()));
    let json_arg = json.to_string_lossy().into_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(args)
        .args(["--json", &json_arg])
        .output()
        .expect("ringmq-bench runs");
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("report is JSON"));
    let _ = std::fs::remove_file(&json);
    (output, report)
}

/// [`run`] that must succeed; its report.
pub fn report(name: &str, args: &[&str]) -> Value {
    let (output, report) = run(name, args);
    assert!(
        output.status.success(),
        "exit {:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    report.expect("--json written")
}
