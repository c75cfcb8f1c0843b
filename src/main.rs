//! The `ringmq` binary.

fn main() {
    eprintln!("ringmq: the broker is not assembled yet; see README.md for what works today");
    std::process::exit(1);
}
