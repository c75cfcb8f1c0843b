//! `ringmq-bench`: the bundled MQTT load generator (built in a later step; see README.md).

fn main() {
    eprintln!("ringmq-bench: the load generator is not built yet; see README.md for what works today");
    std::process::exit(1);
}
