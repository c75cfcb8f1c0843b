//! The `ringmq` binary: reads the configuration, sets up logging and hands over to the broker.
//!
//! Any configuration error is printed as the config module words it (file, key, what is wrong,
//! how to fix it) and the process exits with status 2, before anything starts.

use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmq::config::{self, Config, ConfigError, Log, LogFormat};
use tracing_subscriber::EnvFilter;

/// Exit status for a configuration (or `RUST_LOG`) that cannot be used.
const EXIT_CONFIG: u8 = 2;

/// The package version and the commit it was built from (see `build.rs`).
const VERSION: &str = env!("BUILD_VERSION");

#[derive(Parser)]
#[command(
    name = "ringmq",
    version = VERSION,
    about = "A thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker",
    after_help = "Run `ringmq --help` for signals, environment, files and exit statuses.",
    after_long_help = LONG_HELP
)]
struct Cli {
    /// Configuration file (TOML). Without it the broker runs with the built-in defaults, which
    /// `ringmq print-default-config` prints. RINGMQ_<SECTION>__<KEY> variables override keys.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With persistence on: when the store cannot be read whole (a damaged or foreign file),
    /// start with what can be read and move the damaged generation to a quarantine folder
    /// beside it, instead of refusing to start.
    #[arg(long)]
    ignore_corrupt_storage: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

const LONG_HELP: &str = "\
Without a subcommand, serves MQTT on the configured listeners until SIGTERM or SIGINT.

Signals:
  SIGTERM, SIGINT  Graceful shutdown: stop accepting, publish every will, send 5.0 clients
                   DISCONNECT 0x8B (Server shutting down), close every connection, exit 0;
                   at most runtime.shutdown_timeout_ms. A second signal exits at once (130).
  SIGHUP           Re-read the password file, the ACL file and the TLS certificates; a bad
                   file is refused and the previous ones stay. Connections stay open.

Environment:
  RINGMQ_<SECTION>__<KEY>  Override one config key, e.g. RINGMQ_LIMITS__PACKET_BYTES_MAX=2097152.
  RUST_LOG                 A tracing filter that overrides log.level, e.g. ringmq=debug,info.
  NOTIFY_SOCKET            Set by systemd (Type=notify): READY=1 once every shard listens,
                           STATUS=, WATCHDOG=1 while every shard's loop turns (WatchdogSec),
                           STOPPING=1 when shutdown begins.

Files (Debian package):
  /etc/ringmq/ringmq.toml   The configuration (every key with its default).
  /var/lib/ringmq           State directory, owned by the ringmq user.
  ringmq.service            The systemd unit: systemctl start|reload|stop ringmq.

Exit status: 0 after a clean shutdown, 1 when the broker could not start or a shard failed,
2 for a configuration error (the message names the key and the fix).

Operations guide: docs/OPERATIONS.md; every key: docs/CONFIGURATION.md.";

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file, with the environment overrides, against this machine; print
    /// "FILE: OK" and the shard count, or the error and exit with status 2.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the documented default configuration (every key with its default).
    PrintDefaultConfig,
    /// Create or update a user in a Mosquitto-format password file (like mosquitto_passwd).
    Passwd(ringmq::auth::PasswdArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::PrintDefaultConfig) => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Some(Command::Passwd(args)) => match args.run() {
            Ok(outcome) => {
                let done = match outcome {
                    ringmq::auth::PasswdOutcome::Added => "added",
                    ringmq::auth::PasswdOutcome::Updated => "updated",
                    ringmq::auth::PasswdOutcome::Deleted => "deleted",
                };
                println!("{}: {} {done}", args.file.display(), args.username);
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ringmq passwd: {error}");
                ExitCode::from(1)
            }
        },
        None => start(cli.config.as_deref(), cli.ignore_corrupt_storage),
    }
}

fn check_config(file: &Path) -> ExitCode {
    let resolved = resolve(Some(file)).and_then(|resolved| {
        // The password, ACL and certificate files are read and checked too.
        ringmq::security::check(&resolved.derived.config)
            .map_err(|error| format!("{}: {error}", file.display()))?;
        Ok(resolved)
    });
    match resolved {
        Ok(resolved) => {
            println!("{}: OK", file.display());
            println!("shards: {}", resolved.shards);
            for (_, line) in resolved.summary() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("ringmq: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn start(file: Option<&Path>, ignore_corrupt_storage: bool) -> ExitCode {
    // Caught from the first line on: a SIGTERM during the start (a service manager stopping the
    // broker right after READY=1, or while it reads its store) stops it gracefully once it
    // serves, instead of ending the process half-way.
    let signals = match ringmq::server::Signals::watch() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("ringmq: {error}");
            return ExitCode::from(1);
        }
    };
    let resolved = match resolve(file) {
        Ok(resolved) => resolved,
        Err(message) => {
            eprintln!("ringmq: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shards = resolved.shards;
    let mut config = resolved.derived.config.clone();
    if let Err(message) = init_logging(&config.log) {
        eprintln!("ringmq: {message}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let origin = file.map_or(String::from("built-in defaults"), |file| {
        file.display().to_string()
    });
    tracing::info!(version = VERSION, config = %origin, shards, listeners = config.listener_count(), "configuration loaded");
    for (warning, line) in resolved.summary() {
        if warning {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
    config.persistence.ignore_corrupt_storage = ignore_corrupt_storage;
    let status = run(config, file, signals);
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

/// Starts every shard and serves until SIGINT or SIGTERM, then shuts down gracefully. Returns the
/// process exit status: 0 after a clean shutdown, 1 if the broker could not start or a shard
/// failed (the error says why and what to do).
fn run(config: Config, file: Option<&Path>, signals: ringmq::server::Signals) -> i32 {
    let broker = match ringmq::server::start(config) {
        Ok(broker) => broker,
        Err(error @ ringmq::server::BrokerError::Security(_)) => {
            // A password, ACL or certificate file the config names is unusable: a config error.
            eprintln!("ringmq: {error}");
            return i32::from(EXIT_CONFIG);
        }
        Err(error) => {
            eprintln!("ringmq: {error}");
            return 1;
        }
    };
    // SIGHUP re-reads the bridge definitions from it.
    broker.set_config_file(file.map(Path::to_path_buf));
    for index in 0.. {
        let Some(addr) = broker.listener_addr_checked(index) else {
            break;
        };
        tracing::info!(%addr, shards = broker.shard_count(), "listening");
    }
    match broker.run_until(signals) {
        Ok(()) => {
            tracing::info!("stopped");
            0
        }
        Err(error) => {
            eprintln!("ringmq: {error}");
            1
        }
    }
}

/// The configuration to run with on this machine: its budget and scaled defaults, and the
/// number of shards.
struct Resolved {
    derived: config::derived::Derived,
    shards: usize,
    machine: Option<config::machine::MachineMemory>,
}

impl Resolved {
    /// What start-up logs and `ringmq check-config` prints: the worst case term by term, the
    /// budget and where it came from, the keys scaled to fit it, the machine; each line with
    /// whether it is a warning.
    fn summary(&self) -> Vec<(bool, String)> {
        let config = &self.derived.config;
        let budget = config::budget::Budget::of(config, self.shards);
        let mut lines: Vec<(bool, String)> = budget
            .to_string()
            .lines()
            .map(|line| (false, line.to_owned()))
            .collect();
        lines.extend(
            self.derived
                .summary(self.shards)
                .into_iter()
                .map(|line| (false, line)),
        );
        if let Err(error) = budget.check() {
            // Only a derived budget gets here (a set one refuses to start in `resolve`).
            lines.push((true, format!("{error}")));
        }
        let all = config.limits.memory_budget_bytes;
        let summary = config::machine::summary(all, self.shards, self.machine.as_ref());
        let over = self
            .machine
            .as_ref()
            .is_some_and(|machine| all.saturating_mul(self.shards as u64) > machine.bytes);
        lines.push((over, summary));
        lines
    }
}

/// The validated configuration and the number of shards it gives on this machine, or the
/// message to print.
fn resolve(file: Option<&Path>) -> Result<Resolved, String> {
    let (config, keys) =
        config::load_with_keys(file, environment()).map_err(|error| error.to_string())?;
    let cpus = std::thread::available_parallelism().map_or(1, NonZero::get);
    let shards = config
        .shard_count(cpus)
        .map_err(|error| on_this_machine(file, &error))?;
    let machine = config::machine::detect();
    let derived = config::derived::derive(config, &keys, machine.as_ref(), shards);
    derived
        .config
        .validate()
        .map_err(|error| on_this_machine(file, &error))?;
    // The worst case depends on the shard count, so it is checked here and not in `validate`;
    // over a budget that is set it refuses to start, over a derived one it warns (`summary`).
    let budget = config::budget::Budget::of(&derived.config, shards);
    if derived.source == config::derived::BudgetSource::Set {
        budget
            .check()
            .map_err(|error| format!("{}\n{budget}", on_this_machine(file, &error)))?;
    }
    Ok(Resolved {
        derived,
        shards,
        machine,
    })
}

/// A `shard_count` error names the key; say which file it came from and that it is about the
/// machine.
fn on_this_machine(file: Option<&Path>, error: &ConfigError) -> String {
    let origin = file.map_or(String::from("built-in defaults"), |file| {
        file.display().to_string()
    });
    format!("{origin} (on this machine): {error}")
}

/// The process environment, for `RINGMQ_` overrides. A name or value that is not UTF-8 is passed
/// on lossily, so that a mangled `RINGMQ_` variable is reported rather than skipped.
fn environment() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().map(|(name, value)| {
        (
            name.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )
    })
}

/// Logs at the configured level, as text or JSON lines; `RUST_LOG`, when set, overrides the
/// level with a full filter.
fn init_logging(log: &Log) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).map_err(|error| {
            format!(
                "RUST_LOG={spec}: {error}; write a level like `debug` or a filter like \
                 `ringmq=debug,info`, or unset it to use log.level"
            )
        })?,
        _ => EnvFilter::new(log.level.to_string()),
    };
    let logger = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match log.format {
        LogFormat::Text => logger.try_init(),
        // One object per line, the event's fields flattened next to the message, and no ANSI
        // colour codes inside strings.
        LogFormat::Json => logger
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
    };
    installed.map_err(|error| format!("cannot set up logging: {error}"))
}
