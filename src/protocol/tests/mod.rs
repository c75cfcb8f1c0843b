//! Codec tests: spec vectors, malformed input, streams, round-trips.
