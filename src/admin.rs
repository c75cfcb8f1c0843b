//! The admin HTTP listener: `/metrics`, `/health` and `/ready` for operators and probes.
