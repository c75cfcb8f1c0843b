//! Presets: the basic scenarios of EMQ's Open MQTT Benchmark Suite (github.com/emqx/mqttbs),
//! with their client counts multiplied by `--scale` so they fit a small machine. Each sets the
//! flags the scenario defines; a flag given on the command line wins. The suite's 16-byte payload
//! becomes 20 bytes here (the smallest payload that carries the header).
//!
//! | preset      | suite scenario          | shape at scale 1                                        |
//! |-------------|-------------------------|---------------------------------------------------------|
//! | `p2p`       | p2p-1K-1K-1K-1K         | 1000 publishers -> 1000 subscribers, pairs, 1 msg/s each |
//! | `fanout`    | fanout-1-1k-1-1K        | 1 publisher -> 1000 subscribers of one topic, 1 msg/s    |
//! | `sharedsub` | sharedsub-1K-5-1K-1K    | 1000 publishers -> 5 members of `$share/g/bench/+`       |
//! | `conn`      | conn-tcp-10k-100        | 10000 connections at 100 per second                     |
//!
//! All: QoS 1, keep-alive 300 s, clean session, no auth or TLS.

use crate::cli::{Command, Common, PubsubArgs};
use anyhow::bail;
use clap::ArgMatches;
use clap::parser::ValueSource;

pub const NAMES: [&str; 4] = ["p2p", "fanout", "sharedsub", "conn"];

/// Applies `--preset` (if any) to the parsed command; `matches` says which flags were explicit.
pub fn apply(command: &mut Command, matches: &ArgMatches) -> anyhow::Result<()> {
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let explicit = |id: &str| {
        sub.try_get_raw(id).is_ok() && sub.value_source(id) == Some(ValueSource::CommandLine)
    };
    match command {
        Command::Pubsub(args) => {
            let Some(name) = args.common.preset.clone() else {
                return Ok(());
            };
            pubsub_preset(&name, args, &explicit)
        }
        Command::Conn(args) => match args.common.preset.clone() {
            None => Ok(()),
            Some(name) if name == "conn" => {
                conn_preset(&mut args.common, &explicit);
                Ok(())
            }
            Some(name) => bail!("--preset {name} runs under `pubsub`, not `conn`"),
        },
        Command::Pub(args) => reject(args.common.preset.as_deref()),
        Command::Sub(args) => reject(args.common.preset.as_deref()),
    }
}

fn reject(preset: Option<&str>) -> anyhow::Result<()> {
    match preset {
        None => Ok(()),
        Some("conn") => bail!("--preset conn runs under `conn`"),
        Some(name) => bail!(
            "--preset {name}: presets run under `pubsub` (p2p, fanout, sharedsub) or `conn` (conn)"
        ),
    }
}

fn scaled(base: f64, scale: f64) -> usize {
    ((base * scale).round() as usize).max(1)
}

fn pubsub_preset(
    name: &str,
    args: &mut PubsubArgs,
    explicit: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let scale = args.common.scale;
    if !(scale > 0.0 && scale.is_finite()) {
        bail!("--scale {scale}: give a factor above 0");
    }
    let (publishers, subscribers, topic, sub_topic) = match name {
        "p2p" => (
            scaled(1000.0, scale),
            scaled(1000.0, scale),
            "bench/%i",
            "bench/%i",
        ),
        "fanout" => (1, scaled(1000.0, scale), "bench/fanout", "bench/fanout"),
        "sharedsub" => (scaled(1000.0, scale), 5, "bench/%i", "$share/g/bench/+"),
        "conn" => bail!("--preset conn runs under `conn`"),
        other => bail!("--preset {other}: unknown; one of {}", NAMES.join(", ")),
    };
    let common = &mut args.common;
    set(explicit("count"), &mut common.count, publishers);
    set(explicit("keepalive_secs"), &mut common.keepalive_secs, 300);
    if !explicit("subscribers") {
        args.subscribers = Some(subscribers);
    }
    if !explicit("sub_topic") {
        args.sub_topic = Some(sub_topic.to_string());
    }
    let publish = &mut args.publish;
    set(explicit("topic"), &mut publish.topic, topic.to_string());
    set(explicit("qos"), &mut publish.qos, 1);
    set(
        explicit("size"),
        &mut publish.size,
        crate::header::HEADER_BYTES,
    );
    set(explicit("interval_ms"), &mut publish.interval_ms, 1000.0);
    Ok(())
}

fn conn_preset(common: &mut Common, explicit: &dyn Fn(&str) -> bool) {
    let count = scaled(10_000.0, common.scale);
    set(explicit("count"), &mut common.count, count);
    set(explicit("keepalive_secs"), &mut common.keepalive_secs, 300);
    if !explicit("connect_rate") && !explicit("connect_interval_ms") {
        common.connect_rate = Some(100.0);
    }
}

fn set<T>(explicit: bool, field: &mut T, value: T) {
    if !explicit {
        *field = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, FromArgMatches};

    fn parse(args: &[&str]) -> anyhow::Result<Command> {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        apply(&mut cli.command, &matches)?;
        Ok(cli.command)
    }

    #[test]
    fn presets_scale_and_explicit_flags_win() {
        let Command::Pubsub(args) = parse(&[
            "b", "pubsub", "--preset", "p2p", "--scale", "0.016", "-q", "0",
        ])
        .unwrap() else {
            panic!("pubsub");
        };
        assert_eq!(args.common.count, 16);
        assert_eq!(args.subscribers, Some(16));
        assert_eq!(args.publish.qos, 0, "explicit -q wins");
        assert_eq!(args.publish.size, 20);
        let Command::Pubsub(args) =
            parse(&["b", "pubsub", "--preset", "sharedsub", "--scale", "0.01"]).unwrap()
        else {
            panic!("pubsub");
        };
        assert_eq!(args.common.count, 10);
        assert_eq!(args.sub_topic.as_deref(), Some("$share/g/bench/+"));
        let Command::Conn(args) =
            parse(&["b", "conn", "--preset", "conn", "--scale", "0.1"]).unwrap()
        else {
            panic!("conn");
        };
        assert_eq!(args.common.count, 1000);
        assert_eq!(args.common.connect_rate, Some(100.0));
    }

    #[test]
    fn presets_refuse_the_wrong_command_and_unknown_names() {
        assert!(parse(&["b", "pub", "--preset", "p2p"]).is_err());
        assert!(parse(&["b", "conn", "--preset", "fanout"]).is_err());
        assert!(parse(&["b", "pubsub", "--preset", "nope"]).is_err());
        assert!(parse(&["b", "pubsub", "--preset", "p2p", "--scale", "0"]).is_err());
    }

    #[test]
    fn dash_h_is_the_host() {
        let Command::Pub(args) = parse(&["b", "pub", "-h", "10.0.0.1", "-p", "1884"]).unwrap()
        else {
            panic!("pub");
        };
        assert_eq!(args.common.host, "10.0.0.1");
        assert_eq!(args.common.port, 1884);
        assert!(
            parse(&["b", "pub", "--help"]).is_err(),
            "--help still prints help"
        );
    }
}
