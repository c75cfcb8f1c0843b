use super::*;

const ALICE: ClientIdentity = ClientIdentity {
    client_id: "alice-phone",
    username: Some("alice"),
};
const ANONYMOUS: ClientIdentity = ClientIdentity {
    client_id: "anon-1",
    username: None,
};

fn client<'a>(client_id: &'a str, username: Option<&'a str>) -> ClientIdentity<'a> {
    ClientIdentity {
        client_id,
        username,
    }
}

/// Each row: the client, the topic or filter, the access, the expected answer.
fn check(acl: &str, rows: &[(ClientIdentity, &str, Access, bool)]) {
    let acl = Acl::parse(acl, "test.acl").unwrap();
    for (who, topic, access, expected) in rows {
        assert_eq!(
            acl.check(who, topic, *access),
            *expected,
            "{who:?} {access:?} {topic:?}"
        );
    }
}

use Access::{Read, Subscribe, Write};

#[test]
fn empty_file_denies_everything() {
    for text in ["", "# only a comment\n\n", "user alice\n"] {
        check(
            text,
            &[
                (ALICE, "a", Read, false),
                (ALICE, "#", Subscribe, false),
                (ANONYMOUS, "a", Write, false),
            ],
        );
    }
}

#[test]
fn sections_anonymous_users_and_patterns() {
    let text = "\
# anonymous
topic read public/#
user alice
topic alice/#
topic read shared/+/status
user bob
topic write bob/out
pattern read devices/%c/config
pattern readwrite users/%u/#
";
    let bob = client("bob-1", Some("bob"));
    let carol = client("carol-1", Some("carol"));
    check(
        text,
        &[
            (ANONYMOUS, "public/news", Read, true),
            (ANONYMOUS, "public/news", Write, false),
            (ALICE, "public/news", Read, false),
            (ALICE, "alice/x/y", Write, true),
            (ALICE, "alice", Read, true),
            (ALICE, "shared/a/status", Read, true),
            (ALICE, "shared/a/status", Write, false),
            (ALICE, "bob/out", Write, false),
            (bob, "bob/out", Write, true),
            (bob, "bob/out", Read, false),
            (ALICE, "devices/alice-phone/config", Read, true),
            (ALICE, "devices/bob-1/config", Read, false),
            (ALICE, "devices/alice-phone/config", Write, false),
            (ANONYMOUS, "devices/anon-1/config", Read, true),
            (carol, "users/carol/inbox", Write, true),
            (carol, "users/alice/inbox", Read, false),
            // `%u` patterns do not apply to anonymous clients.
            (ANONYMOUS, "users//inbox", Read, false),
            (carol, "public/news", Read, false),
        ],
    );
}

#[test]
fn topics_with_spaces_and_optional_access() {
    check(
        "topic read a topic/with spaces\ntopic  readwrite   b\ntopic read\ntopic\tdeny\tc\n",
        &[
            (ANONYMOUS, "a topic/with spaces", Read, true),
            (ANONYMOUS, "a topic/with spaces", Write, false),
            (ANONYMOUS, "b", Write, true),
            // A single word is the topic: `topic read` grants readwrite on `read`.
            (ANONYMOUS, "read", Write, true),
            (ANONYMOUS, "c", Read, false),
        ],
    );
}

#[test]
fn deny_wins_over_grants_in_any_order() {
    let text = "\
user alice
topic readwrite home/#
topic deny home/secret/#
pattern deny home/+/%c
";
    check(
        text,
        &[
            (ALICE, "home/lights", Write, true),
            (ALICE, "home/secret", Read, false),
            (ALICE, "home/secret/key", Write, false),
            (ALICE, "home/kitchen/alice-phone", Read, false),
            (ALICE, "home/kitchen/other", Read, true),
            // Subscribing to a filter that only overlaps a deny is allowed; Read filters the
            // denied topics at delivery.
            (ALICE, "home/#", Subscribe, true),
            (ALICE, "home/secret/#", Subscribe, false),
            (ALICE, "home/secret/+", Subscribe, false),
        ],
    );
}

#[test]
fn subscribe_needs_a_read_rule_that_covers_the_filter() {
    let text = "\
user alice
topic read a/#
topic read b/+
topic read c/+/d
topic write w/#
";
    let rows: &[(&str, bool)] = &[
        ("a/#", true),
        ("a/+/b", true),
        ("a", true),
        ("a/x", true),
        ("b/x", true),
        ("b/+", true),
        ("b/#", false),
        ("b", false),
        ("b/x/y", false),
        ("c/x/d", true),
        ("c/+/d", true),
        ("c/#", false),
        ("c/+/+", false),
        ("w/x", false),
        ("+/x", false),
        ("#", false),
        ("$SYS/#", false),
        ("$SYS/broker/uptime", false),
    ];
    let rows: Vec<_> = rows
        .iter()
        .map(|(f, e)| (ALICE, *f, Subscribe, *e))
        .collect();
    check(text, &rows);
    check(
        "user alice\ntopic read #\n",
        &[
            (ALICE, "#", Subscribe, true),
            (ALICE, "+/+/#", Subscribe, true),
            (ALICE, "$SYS/#", Subscribe, false),
        ],
    );
    // `+/#` matches every topic `#` matches; `a/+/#` does not match `a`, which `a/#` matches.
    check(
        "user alice\ntopic read +/#\ntopic read a/+/#\n",
        &[
            (ALICE, "#", Subscribe, true),
            (ALICE, "b/#", Subscribe, true),
            (ALICE, "a/#", Subscribe, true),
        ],
    );
    check(
        "user alice\ntopic read a/+/#\n",
        &[
            (ALICE, "a/#", Subscribe, false),
            (ALICE, "a/+", Subscribe, true),
        ],
    );
}

#[test]
fn sys_is_read_only_and_needs_an_explicit_rule() {
    let text =
        "user alice\ntopic readwrite #\ntopic readwrite $SYS/#\ntopic readwrite +/broker/#\n";
    check(
        text,
        &[
            (ALICE, "a/b", Write, true),
            (ALICE, "$SYS/broker/uptime", Read, true),
            (ALICE, "$SYS/broker/uptime", Write, false),
            (ALICE, "$SYS", Write, false),
            (ALICE, "$SYS/#", Subscribe, true),
            (ALICE, "$share/g/x", Read, false),
        ],
    );
    // `#` and `+` rules do not reach `$` topics.
    check(
        "user alice\ntopic read #\ntopic read +/broker/#\n",
        &[
            (ALICE, "$SYS/broker/uptime", Read, false),
            (ALICE, "$SYS/#", Subscribe, false),
            (ALICE, "$other/x", Read, false),
        ],
    );
}

#[test]
fn dangerous_client_ids_and_usernames_never_widen_a_pattern() {
    let text = "\
pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny private/%u
topic read private/#
";
    for (client_id, username) in [("+", "+"), ("#", "#"), ("a/b", "a/b"), ("x+", "y#")] {
        let who = client(client_id, Some(username));
        // No section for this user: only patterns apply.
        check(
            text,
            &[
                (who, "devices/+/#", Subscribe, false),
                (who, "devices/#", Subscribe, false),
                (who, &format!("devices/{client_id}/x"), Write, false),
                (who, "devices/a/b/x", Read, false),
                (who, "users/+/inbox", Subscribe, false),
                (who, "users/a/b/inbox", Read, false),
            ],
        );
    }
    // A dangerous username turns a `%u` deny pattern into deny-all.
    let text = "topic read #\npattern deny private/%u\nuser a/b\ntopic read public/#\n";
    check(
        text,
        &[
            (client("c", Some("a/b")), "public/news", Read, false),
            (client("c", Some("ok")), "public/news", Read, false),
        ],
    );
    let text = "pattern read public/#\npattern deny private/%u\n";
    check(
        text,
        &[
            (client("c", Some("a/b")), "public/news", Read, false),
            (client("c", Some("ok")), "public/news", Read, true),
            (client("c", Some("ok")), "private/ok", Read, false),
        ],
    );
    // Client ids and usernames without those characters substitute literally.
    check(
        "pattern readwrite devices/%c/#\n",
        &[
            (client("dev 1", None), "devices/dev 1/temp", Write, true),
            (client("dev 1", None), "devices/dev 2/temp", Write, false),
            (client("%u", None), "devices/%u/temp", Write, true),
            (client("", None), "devices//temp", Write, true),
        ],
    );
}

#[test]
fn topic_rules_do_not_substitute() {
    check(
        "topic read a/%c\n",
        &[
            (client("x", None), "a/x", Read, false),
            (client("x", None), "a/%c", Read, true),
        ],
    );
}

#[test]
fn duplicate_user_sections_merge() {
    check(
        "user alice\ntopic read a\nuser bob\ntopic read b\nuser alice\ntopic read c\n",
        &[
            (ALICE, "a", Read, true),
            (ALICE, "c", Read, true),
            (ALICE, "b", Read, false),
        ],
    );
}

#[test]
fn usernames_with_spaces() {
    check(
        "user  alice smith \ntopic read a\n",
        &[(client("c", Some("alice smith")), "a", Read, true)],
    );
}

fn check_error(text: &str, line: usize, expected: Problem) {
    match Acl::parse(text, "test.acl") {
        Err(AuthFileError::Line {
            line: got_line,
            problem,
            ..
        }) => assert_eq!((got_line, problem), (line, expected), "{text:?}"),
        other => panic!("{text:?}: expected an error, got {other:?}"),
    }
}

#[test]
fn malformed_lines_name_the_line_and_the_problem() {
    check_error(
        "topc read a",
        1,
        Problem::UnknownKeyword {
            word: "topc".into(),
        },
    );
    check_error("# x\ntopic", 2, Problem::MissingTopic { keyword: "topic" });
    check_error("pattern  ", 1, Problem::MissingTopic { keyword: "pattern" });
    check_error(
        "topic rw a/b",
        1,
        Problem::UnknownAccess { word: "rw".into() },
    );
    check_error("user", 1, Problem::MissingUsername);
    check_error(
        "topic read a/#/b",
        1,
        Problem::InvalidFilter {
            filter: "a/#/b".into(),
            why: "`#` must be the last level",
        },
    );
    check_error(
        "topic read a/b# # comment",
        1,
        Problem::InvalidFilter {
            filter: "a/b# # comment".into(),
            why: "`+` and `#` must fill a whole level",
        },
    );
    check_error(
        "pattern read sensor-%u/data",
        1,
        Problem::PartialSubstitution {
            level: "sensor-%u".into(),
        },
    );
    let error = Acl::parse("\n\ntopic rw x", "/etc/ringmq/acl").unwrap_err();
    assert_eq!(
        error.to_string(),
        "/etc/ringmq/acl:3: `rw` is not an access type (expected `read`, `write`, `readwrite` or `deny`)"
    );
}

#[test]
fn long_lines_and_long_topics_are_bounded_not_recursive() {
    let deep = vec!["a"; 30_000].join("/");
    let text = format!("topic read {deep}\ntopic read {deep}/#\n");
    check(
        &text,
        &[
            (ANONYMOUS, &deep, Read, true),
            (ANONYMOUS, &format!("{deep}/+/b"), Subscribe, true),
            (ANONYMOUS, &format!("{deep}x"), Read, false),
        ],
    );
    let too_long = format!("topic read {}", "x".repeat(crate::auth::LINE_BYTES_MAX));
    check_error(
        &too_long,
        1,
        Problem::LineTooLong {
            bytes_max: crate::auth::LINE_BYTES_MAX,
        },
    );
}

/// Second check of `covers`: a filter F is covered by rule R iff every topic F matches, R matches.
/// Compared on every pair from small alphabets of filters and topics.
#[test]
fn covers_agrees_with_matching_on_all_small_topics() {
    let levels = ["a", "b", "$s", "+", "#"];
    let mut filters = vec![];
    for first in levels {
        filters.push(first.to_owned());
        for second in levels {
            filters.push(format!("{first}/{second}"));
            for third in ["a", "+", "#"] {
                filters.push(format!("{first}/{second}/{third}"));
            }
        }
    }
    let filters: Vec<_> = filters
        .into_iter()
        .filter(|f| validate_filter(f, false).is_ok())
        .collect();
    let literal = ["a", "b", "$s", ""];
    let mut topics = vec![];
    for first in literal {
        topics.push(first.to_owned());
        for second in literal {
            topics.push(format!("{first}/{second}"));
            for third in literal {
                topics.push(format!("{first}/{second}/{third}"));
            }
        }
    }
    let matches = |filter: &str, topic: &str| {
        let rule = rule(filter);
        rule.covers(&ANONYMOUS, topic, Coverage::Grant)
    };
    for rule_filter in &filters {
        for requested in &filters {
            let expected = topics
                .iter()
                .filter(|topic| matches(requested, topic))
                .all(|topic| matches(rule_filter, topic));
            // Topics up to 3 levels witness every difference among filters of up to 3 levels,
            // except `#` reaching deeper than 3 levels.
            let got = rule(rule_filter).covers(&ANONYMOUS, requested, Coverage::Grant);
            if got != expected {
                assert!(
                    !got && expected && requested.ends_with('#') && !rule_filter.ends_with('#'),
                    "rule {rule_filter} covers {requested}: got {got}, expected {expected}"
                );
            }
        }
    }
}

fn rule(filter: &str) -> Rule {
    Rule {
        filter: filter.into(),
        read: true,
        write: true,
        pattern: false,
        uses_client_id: false,
        uses_username: false,
    }
}

/// Second check of topic matching: against a naive matcher written from the spec's examples.
#[test]
fn matching_follows_the_spec_examples() {
    let rows = [
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("#", "$SYS/x", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
    ];
    for (filter, topic, expected) in rows {
        assert_eq!(
            rule(filter).covers(&ANONYMOUS, topic, Coverage::Grant),
            expected,
            "{filter} vs {topic}"
        );
    }
}
