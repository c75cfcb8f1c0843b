//! `ringmq-bench`: the bundled MQTT load generator. Speaks emqtt-bench's flags (`conn`, `sub`,
//! `pub`, plus `pubsub` with both ends in one process), runs one load shard per core on the
//! `shards` runtime, and reports end-to-end latency from HDR histograms, loss, duplicates and
//! reordering per publisher -> subscriber stream, and emqtt-bench-style per-second rates.

mod cli;
mod client;
mod clock;
mod header;
mod hgrm;
mod html;
mod link;
mod plan;
mod preset;
mod publisher;
mod reader;
mod report;
mod run;
mod shard;
mod stats;
mod stream;
mod template;
mod tls;
mod tracker;
mod ws;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    match bench(&matches) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringmq-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn bench(matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    let mut cli = cli::Cli::from_arg_matches(matches)?;
    preset::apply(&mut cli.command, matches)?;
    let plan = plan::Plan::from_command(&cli.command)?;
    let outputs = (plan.json.clone(), plan.hgrm.clone(), plan.html.clone());
    let run::Outcome { report, latency } = run::run(plan)?;
    print!("{}", report.summary());
    let json = report.to_json()?;
    if let Some(path) = outputs.0 {
        std::fs::write(&path, &json).with_context(|| format!("--json {}", path.display()))?;
    }
    if let Some(path) = outputs.1 {
        std::fs::write(&path, hgrm::render(&latency))
            .with_context(|| format!("--hgrm {}", path.display()))?;
    }
    if let Some(path) = outputs.2 {
        let page = html::render(&report, &html::distribution(&latency), &json);
        std::fs::write(&path, page).with_context(|| format!("--html {}", path.display()))?;
    }
    let failed = report.totals.connect_failed > 0 || report.first_error.is_some();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
