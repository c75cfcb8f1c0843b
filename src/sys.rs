//! `$SYS` topics with Mosquitto's names, built from merged shard metrics.
