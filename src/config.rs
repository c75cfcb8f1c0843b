//! Broker configuration: the TOML file model, its built-in defaults and validation.
