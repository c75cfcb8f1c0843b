//! The documented default file, the docs and the code agree; every kind of mistake gives a message
//! that names the place, the key and the fix.

use std::collections::BTreeSet;

use super::*;

const FILE: &str = "ringmq.toml";

/// Every dotted key in a TOML table, with listener names written `<name>`.
fn keys(table: &toml::Table) -> BTreeSet<String> {
    fn walk(prefix: &str, table: &toml::Table, keys: &mut BTreeSet<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(table) => walk(&path, table, keys),
                _ => {
                    keys.insert(error::key_pattern(&path));
                }
            }
        }
    }
    let mut keys = BTreeSet::new();
    walk("", table, &mut keys);
    keys
}

/// Every key the Config has, including the ones with no default value.
fn all_keys() -> BTreeSet<String> {
    let mut config = Config::default();
    for listener in config.listeners.tcp.values_mut() {
        listener.shard_port_base = Some(20_000);
    }
    config.listeners.tls.insert(
        String::from("default"),
        TlsListener {
            shard_port_base: Some(21_000),
            ca_file: Some("ca.pem".into()),
            ..TlsListener::default()
        },
    );
    config.listeners.ws.insert(
        String::from("default"),
        WsListener {
            shard_port_base: Some(22_000),
            path: Some(String::from("/mqtt")),
            ..WsListener::default()
        },
    );
    config.listeners.wss.insert(
        String::from("default"),
        WssListener {
            shard_port_base: Some(23_000),
            ca_file: Some("ca.pem".into()),
            path: Some(String::from("/mqtt")),
            ..WssListener::default()
        },
    );
    config.auth.password_file = Some("passwd".into());
    config.auth.acl_file = Some("acl".into());
    config.auth.allow_anonymous = Some(true);
    config.bridges.insert(
        String::from("cloud"),
        crate::config::Bridge {
            addresses: vec![String::from("remote:1883")],
            shard: Some(0),
            client_id: Some(String::from("edge")),
            username: Some(String::from("u")),
            password: Some(String::from("p")),
            ca_file: Some("ca.pem".into()),
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            sni: Some(String::from("remote")),
            alpn: vec![String::from("mqtt")],
            topics: vec![crate::config::TopicRule::default()],
            ..crate::config::Bridge::default()
        },
    );
    keys(&toml::Table::try_from(&config).unwrap())
}

/// Keys with no default value, shown commented out in the default file.
const COMMENTED_OUT: [&str; 3] = ["password_file", "acl_file", "allow_anonymous"];

#[test]
fn default_file_is_the_default_config() {
    assert_eq!(
        parse(DEFAULT_TOML, "config/ringmq.toml").unwrap(),
        Config::default()
    );
    assert_eq!(parse("", FILE).unwrap(), Config::default());
    assert_eq!(load(None, Vec::new()).unwrap(), Config::default());
    Config::default().validate().unwrap();
}

#[test]
fn default_file_sets_every_key() {
    let written = keys(&DEFAULT_TOML.parse::<toml::Table>().unwrap());
    let mut expected = all_keys();
    // Not set by default, so it can only be shown commented out.
    assert!(expected.remove("listeners.tcp.<name>.shard_port_base"));
    assert!(DEFAULT_TOML.contains("\n# shard_port_base = "));
    for key in COMMENTED_OUT {
        assert!(expected.remove(&format!("auth.{key}")));
        assert!(DEFAULT_TOML.contains(&format!("\n# {key} = ")), "{key}");
    }
    // Scaled with the memory budget unless set, so shown commented out with their values.
    for key in crate::config::derived::scaled_keys().chain(["limits.memory_budget_bytes"]) {
        assert!(expected.remove(key), "{key}");
        let (_, name) = key.split_once('.').unwrap();
        assert!(DEFAULT_TOML.contains(&format!("\n# {name} = ")), "{key}");
    }
    // No TLS or WebSocket listener by default: each key is shown in a commented-out example
    // (a secure WebSocket listener's keys are those of the other two).
    // No bridge either: its keys are shown commented out, its topic rules as a
    // commented-out [[bridges.NAME.topics]] table.
    assert!(expected.remove("bridges.<name>.topics"));
    assert!(DEFAULT_TOML.contains("\n# [[bridges.cloud.topics]]"));
    expected.retain(|key| {
        let name = ["tls", "ws", "wss"]
            .iter()
            .find_map(|kind| key.strip_prefix(&format!("listeners.{kind}.<name>.")))
            .or_else(|| key.strip_prefix("bridges.<name>."));
        match name {
            Some(name) => {
                assert!(DEFAULT_TOML.contains(&format!("\n# {name} = ")), "{name}");
                false
            }
            None => true,
        }
    });
    assert_eq!(written, expected);
}

#[test]
fn docs_list_every_key() {
    let docs = include_str!("../../docs/CONFIGURATION.md");
    for key in all_keys() {
        let (section, name) = key.split_once('.').unwrap();
        let name = name
            .strip_prefix("tcp.<name>.")
            .or_else(|| name.strip_prefix("tls.<name>."))
            .or_else(|| name.strip_prefix("ws.<name>."))
            .or_else(|| name.strip_prefix("wss.<name>."))
            .or_else(|| name.strip_prefix("<name>."))
            .unwrap_or(name);
        assert!(
            docs.contains(&format!("| `{name}`")),
            "docs/CONFIGURATION.md misses {key}"
        );
        assert!(
            docs.contains(&format!("[{section}")),
            "docs/CONFIGURATION.md misses [{section}]"
        );
    }
}

#[test]
fn file_values() {
    let config = parse(
        "[runtime]\nshards = 4\ncpus = [0, 2]\npin = false\n\
         [listeners.tcp.public]\nbind = \"[::]:8883\"\nshard_port_base = 20000\n\
         [listeners.tcp.local]\nbind = \"127.0.0.1:1883\"\n\
         [limits]\npacket_bytes_max = 2097152\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
        FILE,
    )
    .unwrap();
    assert_eq!(config.runtime.shards, ShardCount::Count(4));
    assert_eq!(config.runtime.cpus, CpuList::List(vec![0, 2]));
    // A file's listeners replace the built-in one.
    assert_eq!(config.listener_count(), 2);
    let public = &config.listeners.tcp["public"];
    assert_eq!(public.bind.to_string(), "[::]:8883");
    assert_eq!(public.shard_port_base, Some(20_000));
    assert_eq!(public.backlog, 1024);
    assert_eq!(config.limits.packet_bytes_max, 2_097_152);
    assert_eq!(config.limits.outbox_messages_max, 1000);
    assert_eq!(config.log.level, LogLevel::Debug);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.shard_count(2).unwrap(), 4);
}

#[track_caller]
fn check(text: &str, expected: &str) {
    match parse(text, FILE) {
        Ok(config) => panic!("{text:?} was accepted: {config:?}"),
        Err(error) => assert_eq!(error.to_string(), expected, "for {text:?}"),
    }
}

#[test]
fn syntax_and_type_errors() {
    check(
        "[limits]\npacket_bytes_max = \n",
        "ringmq.toml:2: not valid TOML: invalid string: expected `\"`, `'`; \
         fix the syntax (compare with `ringmq print-default-config`)",
    );
    check(
        "[limits]\n[limits]\n",
        "ringmq.toml:2: not valid TOML: invalid table header: duplicate key `limits` in document \
         root; fix the syntax (compare with `ringmq print-default-config`)",
    );
    check(
        "[limits]\npacket_byte_max = 5\n",
        "ringmq.toml:2: unknown key `limits.packet_byte_max`; valid keys in [limits]: \
         packet_bytes_max, inflight_messages_max, incoming_qos2_v3_max, outbox_messages_max, outbox_bytes_max, \
         client_id_bytes_max, topic_bytes_max, topic_levels_max, subscriptions_per_session_max, \
         filters_per_subscribe_max, user_properties_max, connections_per_shard_max, \
         sessions_per_shard_max, queued_bytes_per_shard_max, queued_messages_per_shard_max, \
         subscriptions_per_shard_max, connections_max, retained_messages_max, retained_bytes_max, will_bytes_max, \
         control_pending_max, connect_rate_per_shard_max, partial_packet_bytes_per_shard_max, \
         packet_timeout_ms, topic_alias_bytes_per_shard_max, subscription_bytes_per_shard_max, \
         will_bytes_per_shard_max, write_buffer_bytes_per_shard_max, outbox_drop_policy, memory_budget_bytes, memory_budget_percent",
    );
    check(
        "[limit]\n",
        "ringmq.toml:1: unknown key `limit`; valid keys in the top level: \
         runtime, listeners, mqtt, session, limits, log, admin, sys, observability, auth, \
         persistence, bridges, cluster",
    );
    check(
        "[listeners.tcp.default]\nport = 1883\n",
        "ringmq.toml:2: unknown key `listeners.tcp.default.port`; valid keys in \
         [listeners.tcp.default]: bind, backlog, shard_port_base, nodelay",
    );
    check(
        "[limits]\npacket_bytes_max = \"1MB\"\n",
        "ringmq.toml:2: limits.packet_bytes_max: invalid type: string \"1MB\", expected u32; \
         write a whole number that must be between 16 and 268435455 bytes; set it to the largest \
         packet you accept, e.g. 1048576",
    );
    check(
        "[mqtt]\nretain_available = 1\n",
        "ringmq.toml:2: mqtt.retain_available: invalid type: integer `1`, expected a boolean; \
         write true or false",
    );
    check(
        "[runtime]\nshards = \"many\"\n",
        "ringmq.toml:2: runtime.shards: invalid value: string \"many\", expected \"auto\" or a \
         number of shards from 1 to 256; write \"auto\" for one shard per CPU, or a number from \
         1 to 256",
    );
    check(
        "[runtime]\ncpus = [0, -1]\n",
        "ringmq.toml:2: runtime.cpus[1]: invalid value: integer `-1`, expected usize; \
         write \"all\", or a list of CPU numbers like [0, 2, 4]",
    );
    check(
        "[listeners.tcp.default]\nbind = \"localhost:1883\"\n",
        "ringmq.toml:2: listeners.tcp.default.bind: invalid socket address syntax; write an IP \
         address and port in quotes, e.g. \"0.0.0.0:1883\" or \"[::]:1883\" (host names are not \
         resolved)",
    );
    check(
        "[log]\nlevel = \"verbose\"\n",
        "ringmq.toml:2: log.level: unknown variant `verbose`, expected one of `error`, `warn`, \
         `info`, `debug`, `trace`; write one of \"error\", \"warn\", \"info\", \"debug\", \
         \"trace\"",
    );
    check(
        "[log]\nformat = \"xml\"\n",
        "ringmq.toml:2: log.format: unknown variant `xml`, expected `text` or `json`; write \
         \"text\" or \"json\"",
    );
    check(
        "[limits]\noutbox_drop_policy = \"drop_all\"\n",
        "ringmq.toml:2: limits.outbox_drop_policy: unknown variant `drop_all`, expected \
         `drop_new` or `drop_oldest`; write \"drop_new\" or \"drop_oldest\"",
    );
}

#[test]
fn cluster_errors() {
    check(
        "[cluster]\nenabled = true\n",
        "ringmq.toml: cluster.node_id = \"\": required when cluster.enabled = true; give each \
         node its own id, e.g. node_id = \"node-1\"",
    );
    check(
        "[cluster]\nenabled = true\nnode_id = \"a.b\"\n",
        "ringmq.toml: cluster.node_id = \"a.b\": must be 1 to 64 letters, digits, '-' or '_' \
         (it is part of NATS subjects); e.g. node_id = \"node-1\", unique in the cluster",
    );
    check(
        "[cluster]\nname = \"x>\"\n",
        "ringmq.toml: cluster.name = \"x>\": must be 1 to 64 letters, digits, '-' or '_' (it \
         is part of NATS subjects); e.g. name = \"ringmq\"; every node of one cluster uses the \
         same name",
    );
    check(
        "[cluster]\nuser = \"u\"\npassword = \"p\"\ntoken = \"t\"\n",
        "ringmq.toml: cluster.token = (set): NATS takes one way to authenticate, and \
         cluster.user is set too; keep one of cluster.user with its password, cluster.token, \
         cluster.nkey_seed_file and cluster.credentials_file",
    );
    check(
        "[cluster]\ntoken = \"t\"\nnkey_seed_file = \"/seed\"\n",
        "ringmq.toml: cluster.nkey_seed_file = (set): NATS takes one way to authenticate, and \
         cluster.token is set too; keep one of cluster.user with its password, cluster.token, \
         cluster.nkey_seed_file and cluster.credentials_file",
    );
    check(
        "[cluster]\nnkey_seed_file = \"/seed\"\ncredentials_file = \"/u.creds\"\n",
        "ringmq.toml: cluster.credentials_file = (set): NATS takes one way to authenticate, and \
         cluster.nkey_seed_file is set too; keep one of cluster.user with its password, \
         cluster.token, cluster.nkey_seed_file and cluster.credentials_file",
    );
    check(
        "[cluster]\ncredentials_file = \"\"\n",
        "ringmq.toml: cluster.credentials_file = \"\": an empty path names no file; give the \
         file's path, or remove the key",
    );
    check(
        "[cluster]\nuser = \"u\"\n",
        "ringmq.toml: cluster.user = \"u\": a NATS user needs a password; set \
         cluster.password, or cluster.password_file to a file holding it",
    );
    check(
        "[cluster]\npassword = \"hidden\"\n",
        "ringmq.toml: cluster.password = (set): a password needs cluster.user; set cluster.user \
         to the NATS user it belongs to",
    );
    check(
        "[cluster]\nuser = \"u\"\npassword = \"hidden\"\npassword_file = \"/p\"\n",
        "ringmq.toml: cluster.password_file = (set): cluster.password is set too; keep one of \
         cluster.password and cluster.password_file",
    );
    check(
        "[cluster]\ntls_ca_file = \"\"\n",
        "ringmq.toml: cluster.tls_ca_file = \"\": an empty path names no file; give the \
         file's path, or remove the key",
    );
    check(
        "[cluster]\ntls_ca_file = \"/ca.pem\"\ntls_cert_file = \"/c.pem\"\n",
        "ringmq.toml: cluster.tls_key_file = (not set): a client certificate needs both \
         cluster.tls_cert_file and cluster.tls_key_file; set cluster.tls_key_file too",
    );
    check(
        "[cluster]\ntls_required = true\n",
        "ringmq.toml: cluster.tls_required = (set): TLS to NATS needs cluster.tls_ca_file to \
         verify the server; set cluster.tls_ca_file to the CA (PEM) that signed the NATS \
         server's certificate",
    );
    check(
        "[cluster]\nenabled = true\nnode_id = \"n1\"\nnats_urls = []\n",
        "ringmq.toml: cluster.nats_urls = []: needs at least one NATS server when \
         cluster.enabled = true; e.g. nats_urls = [\"nats://10.0.0.5:4222\"]",
    );
    check(
        "[cluster]\nheartbeat_ms = 1000\nnode_timeout_ms = 1000\n",
        "ringmq.toml: cluster.node_timeout_ms = 1000: must be longer than cluster.heartbeat_ms \
         (1000); e.g. five heartbeats: node_timeout_ms = 5000 with heartbeat_ms = 1000",
    );
    let config = parse(
        "[cluster]\nenabled = true\nnode_id = \"node-1\"\nname = \"prod_eu\"\n",
        FILE,
    )
    .unwrap();
    assert_eq!(config.cluster.node_id, "node-1");
}

#[test]
fn value_errors() {
    check(
        "[limits]\npacket_bytes_max = 0\n",
        "ringmq.toml: limits.packet_bytes_max = 0: must be between 16 and 268435455 bytes; \
         set it to the largest packet you accept, e.g. 1048576",
    );
    check(
        "[limits]\npacket_bytes_max = 33554432\n",
        "ringmq.toml: limits.outbox_bytes_max = 16777216: must be at least \
         limits.packet_bytes_max (33554432), or a packet of the largest size could never be \
         queued; raise it or lower limits.packet_bytes_max",
    );
    check(
        "[limits]\nqueued_bytes_per_shard_max = 1000\n",
        "ringmq.toml: limits.queued_bytes_per_shard_max = 1000: must be at least \
         limits.packet_bytes_max (1048576), or a packet of the largest size could never be \
         queued; raise it or lower limits.packet_bytes_max",
    );
    check(
        "[runtime]\nshards = 0\n",
        "ringmq.toml: runtime.shards = 0: must be \"auto\" or between 1 and 256; \
         write \"auto\" for one shard per CPU, or a number like 4",
    );
    check(
        "[runtime]\ncpus = []\n",
        "ringmq.toml: runtime.cpus = []: must list at least one CPU; \
         list CPU numbers like [0, 1], or write \"all\"",
    );
    check(
        "[runtime]\ncpus = [0, 1, 0]\n",
        "ringmq.toml: runtime.cpus = [0, 1, 0]: lists CPU 0 twice; list each CPU once",
    );
    check(
        "[runtime]\nshards = 3\ncpus = [0, 1]\n",
        "ringmq.toml: runtime.shards = 3: runtime.pin = true gives each shard its own CPU, but \
         only 2 are available; lower runtime.shards to 2, make more CPUs available in \
         runtime.cpus, or set runtime.pin = false",
    );
    check(
        "[runtime]\nshutdown_timeout_ms = 0\n",
        "ringmq.toml: runtime.shutdown_timeout_ms = 0: must be between 100 and 600000 \
         milliseconds; keep it below the service manager's stop timeout (TimeoutStopSec); e.g. \
         10000",
    );
    check(
        "[runtime]\nring_depth = 100\n",
        "ringmq.toml: runtime.ring_depth = 100: must be a power of two (the kernel rounds it up \
         anyway); e.g. 256",
    );
    check(
        "[runtime]\nshards = 8\npin = false\n[listeners.tcp.default]\nshard_port_base = 65530\n",
        "ringmq.toml: listeners.tcp.default.shard_port_base = 65530: shard ports 65530 to 65537 \
         (one per shard, 8 shards) go past 65535; choose a base of at most 65528, e.g. 20000, or \
         remove the key",
    );
    check(
        "[listeners]\n",
        "ringmq.toml: listeners.tcp = {}: no listener is configured, so no client could connect; \
         add one, e.g. [listeners.tcp.default] with bind = \"0.0.0.0:1883\"",
    );
    check(
        "[listeners.tcp.a]\n[listeners.tcp.b]\n",
        "ringmq.toml: listeners.tcp.b.bind = \"0.0.0.0:1883\": listener `tcp.a` already binds \
         this address; give each listener its own address or port",
    );
    check(
        "[listeners.ws.browser]\npath = \"mqtt\"\n",
        "ringmq.toml: listeners.ws.browser.path = \"mqtt\": a request path starts with '/' and \
         has no spaces; write e.g. \"/mqtt\", or remove the key to accept any path",
    );
    check(
        "[listeners.ws.browser]\nframe_bytes_max = 4096\nmessage_bytes_max = 1024\n",
        "ringmq.toml: listeners.ws.browser.message_bytes_max = 1024: smaller than \
         frame_bytes_max (4096): a message is one or more frames; raise message_bytes_max or \
         lower frame_bytes_max",
    );
    check(
        "[listeners.wss.browser]\nallowed_origins = [\"app.example\"]\n\
         cert_chain_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        "ringmq.toml: listeners.wss.browser.allowed_origins = \"app.example\": an origin is a \
         scheme, host and optional port, as browsers send it; write e.g. \
         \"https://dashboard.example.com\" (no path, no trailing '/')",
    );
    check(
        "[listeners.tcp.a]\n[listeners.ws.b]\nbind = \"0.0.0.0:1883\"\n",
        "ringmq.toml: listeners.ws.b.bind = \"0.0.0.0:1883\": listener `tcp.a` already \
         binds this address; give each listener its own address or port",
    );
    check(
        "[listeners.tls.secure]\nkey_file = \"k.pem\"\n",
        "ringmq.toml: listeners.tls.secure.cert_chain_file = (not set): a TLS listener needs its \
         certificate chain and private key; set cert_chain_file to a PEM file, e.g. \
         \"/etc/ringmq/certs/server.pem\"",
    );
    check(
        "[listeners.tls.secure]\ncert_chain_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
         min_version = \"1.1\"\n",
        "ringmq.toml: listeners.tls.secure.min_version = \"1.1\": not a TLS version ringmq \
         offers; write \"1.2\" or \"1.3\"",
    );
    check(
        "[listeners.tls.secure]\ncert_chain_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
         require_certificate = true\n",
        "ringmq.toml: listeners.tls.secure.require_certificate = true: client certificates cannot \
         be verified without the CAs that sign them; set ca_file to a PEM file of those CAs",
    );
    check(
        "[listeners.tcp.plain]\n[listeners.tls.secure]\nbind = \"0.0.0.0:1883\"\n\
         cert_chain_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        "ringmq.toml: listeners.tls.secure.bind = \"0.0.0.0:1883\": listener `tcp.plain` \
         already binds this address; give each listener its own address or port",
    );
    check(
        "[auth]\nverify_threads = 0\n",
        "ringmq.toml: auth.verify_threads = 0: must be between 1 and 64 threads; e.g. 2; argon2id \
         needs one thread per concurrent check",
    );
    check(
        "[session]\nexpiry_default_secs = 700000\n",
        "ringmq.toml: session.expiry_default_secs = 700000: must not exceed \
         session.expiry_max_secs (604800); lower it or raise session.expiry_max_secs",
    );
    check(
        "[limits]\nclient_id_bytes_max = 23\n",
        "ringmq.toml: mqtt.assigned_client_id_prefix = \"ringmq-\": with the 23-byte unique \
         suffix an assigned id would exceed limits.client_id_bytes_max (23); shorten the prefix \
         or raise limits.client_id_bytes_max",
    );
}

/// Just below and just above every range, the error names the key.
#[test]
fn every_range_is_enforced() {
    for range in check::TABLES.iter().flat_map(|table| table.iter()) {
        let (section, key) = range.key.split_once('.').unwrap();
        let mut outside = vec![range.max + 1];
        if range.min > 0 {
            outside.push(range.min - 1);
        }
        for value in outside {
            let text = format!("[{section}]\n{key} = {value}\n");
            let error = parse(&text, FILE).unwrap_err();
            assert_eq!(error.key(), Some(range.key), "{text}: {error}");
        }
    }
}

#[test]
fn environment_overrides() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    };
    let config = load(
        None,
        env(&[
            ("RINGMQ_LIMITS__PACKET_BYTES_MAX", "2097152"),
            ("RINGMQ_RUNTIME__SHARDS", "4"),
            ("RINGMQ_RUNTIME__CPUS", "[0, 1, 2, 3]"),
            ("RINGMQ_LOG__LEVEL", "debug"),
            ("RINGMQ_LISTENERS__TCP__DEFAULT__BIND", "127.0.0.1:1884"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.limits.packet_bytes_max, 2_097_152);
    assert_eq!(config.runtime.shards, ShardCount::Count(4));
    assert_eq!(config.runtime.cpus, CpuList::List(vec![0, 1, 2, 3]));
    assert_eq!(config.log.level, LogLevel::Debug);
    assert_eq!(
        config.listeners.tcp["default"].bind.to_string(),
        "127.0.0.1:1884"
    );
    let auto = load(None, env(&[("RINGMQ_RUNTIME__SHARDS", "\"auto\"")])).unwrap();
    assert_eq!(auto.runtime.shards, ShardCount::Auto);
    // The NATS password from the environment instead of the file.
    let nats = load(
        None,
        env(&[
            ("RINGMQ_CLUSTER__USER", "ringmq"),
            ("RINGMQ_CLUSTER__PASSWORD", "s3cret-pass"),
        ]),
    )
    .unwrap();
    assert_eq!(nats.cluster.user.as_deref(), Some("ringmq"));
    let password = nats.cluster.password.as_ref().map(super::Secret::expose);
    assert_eq!(password, Some("s3cret-pass"));
    assert!(!format!("{nats:?}").contains("s3cret-pass"));

    let cases = [
        (
            ("RINGMQ_LIMITS__PACKET_BYTE_MAX", "5"),
            "environment variable RINGMQ_LIMITS__PACKET_BYTE_MAX=5: unknown key \
             `limits.packet_byte_max`; valid keys in [limits]: packet_bytes_max, ",
        ),
        (
            ("RINGMQ_LIMITS_PACKET_BYTES_MAX", "5"),
            "environment variable RINGMQ_LIMITS_PACKET_BYTES_MAX: not of the form \
             RINGMQ_<SECTION>__<KEY>; separate the section and the key with a double underscore",
        ),
        (
            ("RINGMQ_LIMITS__PACKET_BYTES_MAX", "1MB"),
            "environment variable RINGMQ_LIMITS__PACKET_BYTES_MAX=1MB: limits.packet_bytes_max: \
             invalid type: string \"1MB\", expected u32; write a whole number",
        ),
        (
            ("RINGMQ_LIMITS__PACKET_BYTES_MAX", "0"),
            "environment variable RINGMQ_LIMITS__PACKET_BYTES_MAX=0: limits.packet_bytes_max = 0: \
             must be between 16 and 268435455 bytes",
        ),
        (
            ("RINGMQ_LIMITS__PACKET_BYTES_MAX__X", "0"),
            "environment variable RINGMQ_LIMITS__PACKET_BYTES_MAX__X=0: unknown key \
             `limits.packet_bytes_max.x`",
        ),
        (
            ("RINGMQ_BOGUS__KEY", "1"),
            "environment variable RINGMQ_BOGUS__KEY=1: unknown key `bogus`; valid keys in the \
             top level: runtime, listeners",
        ),
    ];
    for ((name, value), expected) in cases {
        let error = load(None, env(&[(name, value)])).unwrap_err().to_string();
        assert!(
            error.starts_with(expected),
            "{name}={value}:\n{error}\n{expected}"
        );
    }
}

#[test]
fn relation_broken_by_environment_names_it() {
    let env = vec![(
        "RINGMQ_LIMITS__PACKET_BYTES_MAX".to_owned(),
        "33554432".to_owned(),
    )];
    let error = load(None, env).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "built-in defaults with RINGMQ_LIMITS__PACKET_BYTES_MAX: limits.outbox_bytes_max = "
        ),
        "{error}"
    );
}

#[test]
fn missing_file() {
    let error = load(Some(Path::new("/nonexistent/ringmq.toml")), Vec::new()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/ringmq.toml: cannot read the config file")
    );
}

#[test]
fn shard_count() {
    let with = |text: &str| parse(text, FILE).unwrap();
    assert_eq!(Config::default().shard_count(2).unwrap(), 2);
    assert_eq!(Config::default().shard_count(0).unwrap(), 1);
    assert_eq!(
        with("[runtime]\ncpus = [1, 3, 5]\n")
            .shard_count(2)
            .unwrap(),
        3
    );
    assert_eq!(
        with("[runtime]\nshards = 8\npin = false\n")
            .shard_count(2)
            .unwrap(),
        8
    );
    let pinned = with("[runtime]\nshards = 8\n").shard_count(2).unwrap_err();
    assert_eq!(pinned.key(), Some("runtime.shards"));
    let ephemeral =
        with("[runtime]\nshards = 4\npin = false\n[listeners.tcp.default]\nshard_port_base = 0\n");
    assert_eq!(ephemeral.shard_count(2).unwrap(), 4);
    let ports = with("[listeners.tcp.default]\nshard_port_base = 65535\n").shard_count(2);
    assert_eq!(
        ports.unwrap_err().key(),
        Some("listeners.tcp.default.shard_port_base")
    );
}

#[test]
fn bridge_errors_name_the_key() {
    let bridge = "[bridges.cloud]\naddresses = [\"remote:1883\"]\n";
    let rule = "[[bridges.cloud.topics]]\ntopic = \"a/#\"\n";
    check(
        bridge,
        "ringmq.toml: bridges.cloud.topics = []: a bridge without topic rules forwards nothing; \
         add [[bridges.NAME.topics]] with topic = \"sensors/#\" and direction = \"out\"",
    );
    check(
        &format!("[bridges.cloud]\n{rule}"),
        "ringmq.toml: bridges.cloud.addresses = []: a bridge needs the remote broker's address; \
         write e.g. addresses = [\"broker.example.com:1883\"]",
    );
    check(
        "[bridges.cloud]\naddresses = [\"remote\"]\n",
        "ringmq.toml: bridges.cloud.addresses = \"remote\": not of the form host:port; \
         write e.g. \"broker.example.com:1883\" or \"[::1]:1883\"",
    );
    check(
        &format!("{bridge}{rule}qos = 3\n"),
        "ringmq.toml: bridges.cloud.topics[0].qos = 3: QoS is 0, 1 or 2; write 0, 1 or 2",
    );
    check(
        &format!("{bridge}{rule}local_prefix = \"a/+/\"\n"),
        "ringmq.toml: bridges.cloud.topics[0].local_prefix = \"a/+/\": a prefix may not hold \
         wildcards; write a plain topic prefix, e.g. \"site1/\"",
    );
    check(
        &format!("{bridge}{rule}direction = \"sideways\"\n"),
        "ringmq.toml:5: bridges.cloud.topics[0].direction: unknown variant `sideways`, expected \
         one of `out`, `in`, `both`; a topic rule has topic (a string), direction (\"out\", \
         \"in\" or \"both\"), qos (0, 1 or 2), local_prefix and remote_prefix (strings)",
    );
    check(
        &format!("{bridge}cert_file = \"c.pem\"\n{rule}"),
        "ringmq.toml: bridges.cloud.cert_file = (set): TLS keys need TLS, which ca_file turns \
         on; set ca_file to the CA that signed the remote's certificate",
    );
    check(
        &format!("{bridge}reconnect_min_ms = 5000\nreconnect_max_ms = 1000\n{rule}"),
        "ringmq.toml: bridges.cloud.reconnect_min_ms = 5000: must be at least 1 and at most \
         reconnect_max_ms (1000); e.g. reconnect_min_ms = 1000 and reconnect_max_ms = 30000",
    );
    let config = parse(
        &format!("{bridge}{rule}direction = \"both\"\nqos = 1\n"),
        FILE,
    )
    .unwrap();
    let parsed = &config.bridges["cloud"];
    assert_eq!(parsed.topics[0].direction, crate::config::Direction::Both);
    assert_eq!(parsed.version, crate::config::BridgeVersion::V5);
}
