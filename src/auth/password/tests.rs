use super::*;
use crate::auth::passwd::hash_argon2id;
use std::process::Command;

/// Written by Debian's `mosquitto_passwd` 2.0.11: alice/secret with the default (`$7$`, 101
/// iterations, 12-byte salt), bob/hunter2 with `-H sha512` (`$6$`).
const MOSQUITTO_2_0: &str = "\
alice:$7$101$cMNEI8pkYUPm23cF$ERnKFwScwJvSjsp2TcyasIF/DHhx3b2Nkfzu6wvaypi0wioNU9+hD9l1jqlybHX3dx/6ESw3EqS3NMuKt7ha8A==
bob:$6$hy4QqP0ohFrqAGur$wF1SB0GjnxaJPnoZJLkYwu2IYkXJwptnKLvo1NCTvpV3xiSCedOt9mjUvGPeiVRok2FkGBtPWghiwNRZJNGvMA==
";

/// Runs Debian's `mosquitto_passwd`; its absence is a failure that says what to install.
fn mosquitto_passwd(args: &[&str]) {
    let status = Command::new("mosquitto_passwd")
        .args(args)
        .status()
        .unwrap_or_else(|error| {
            panic!("cannot run mosquitto_passwd ({error}): install mosquitto (apt-get install mosquitto)")
        });
    assert!(
        status.success(),
        "mosquitto_passwd {args:?} failed: {status}"
    );
}

fn small_argon2() -> argon2::Params {
    argon2::Params::new(64, 1, 1, Some(32)).unwrap()
}

#[test]
fn reads_a_file_written_by_mosquitto_2_0() {
    let file = PasswordFile::parse(MOSQUITTO_2_0, "fixture").unwrap();
    assert_eq!(file.len(), 2);
    assert!(file.verify("alice", b"secret"));
    assert!(file.verify("bob", b"hunter2"));
    assert!(!file.verify("alice", b"hunter2"));
    assert!(!file.verify("bob", b"secret"));
    assert!(!file.verify("carol", b"secret"));
    assert!(!file.verify("alice", b""));
}

#[test]
fn reads_files_written_now_by_mosquitto_passwd() {
    let dir = std::env::temp_dir().join(format!("ringmq-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("passwords");
    let file = path.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", file, "alice", "correct horse"]);
    mosquitto_passwd(&["-H", "sha512-pbkdf2", "-b", file, "bob", "b:o$b#"]);
    mosquitto_passwd(&["-H", "sha512", "-b", file, "carol", "ünïcødé"]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("alice:$7$"), "{text}");
    assert!(text.contains("carol:$6$"), "{text}");
    let passwords = PasswordFile::load(&path).unwrap();
    assert!(passwords.verify("alice", b"correct horse"));
    assert!(passwords.verify("bob", "b:o$b#".as_bytes()));
    assert!(passwords.verify("carol", "ünïcødé".as_bytes()));
    assert!(!passwords.verify("alice", b"correct horse "));
    assert!(!passwords.verify("carol", b"unicode"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn argon2id_entries_verify_and_agree_with_the_crate_verifier() {
    use argon2::password_hash::PasswordVerifier;
    let hash = hash_argon2id(b"pw", small_argon2()).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
    let file = PasswordFile::parse(&format!("# users\n\ndave:{hash}\n"), "test").unwrap();
    assert!(file.verify("dave", b"pw"));
    assert!(!file.verify("dave", b"pW"));
    // Second check: the argon2 crate's own PHC verifier agrees.
    let parsed = phc::PasswordHash::new(&hash).unwrap();
    let verifier = argon2::Argon2::default();
    assert!(verifier.verify_password(b"pw", &parsed).is_ok());
    assert!(verifier.verify_password(b"pW", &parsed).is_err());
}

#[test]
fn comments_blank_lines_and_crlf_are_accepted() {
    let text = format!(
        "# comment\r\n\r\n   \n  # indented comment\n{}",
        MOSQUITTO_2_0.replace('\n', "\r\n")
    );
    let file = PasswordFile::parse(&text, "crlf").unwrap();
    assert!(file.verify("alice", b"secret"));
    assert!(file.verify("bob", b"hunter2"));
}

fn check_error(text: &str, line: usize, expected: Problem) {
    match PasswordFile::parse(text, "pw.txt") {
        Err(AuthFileError::Line {
            origin,
            line: got_line,
            problem,
        }) => {
            assert_eq!(origin, "pw.txt");
            assert_eq!((got_line, problem), (line, expected), "input {text:?}");
        }
        other => panic!("{text:?}: expected an error on line {line}, got {other:?}"),
    }
}

fn bad(username: &str, what: HashProblem) -> Problem {
    Problem::BadHash {
        username: username.to_owned(),
        what,
    }
}

#[test]
fn malformed_lines_name_the_line_and_the_problem() {
    let salt12 = "cMNEI8pkYUPm23cF";
    let hash64 =
        "ERnKFwScwJvSjsp2TcyasIF/DHhx3b2Nkfzu6wvaypi0wioNU9+hD9l1jqlybHX3dx/6ESw3EqS3NMuKt7ha8A==";
    check_error("alice", 1, Problem::MissingColon);
    check_error("# x\n:$6$a$b", 2, Problem::EmptyUsername);
    check_error(
        "alice:  ",
        1,
        Problem::EmptyHash {
            username: "alice".into(),
        },
    );
    check_error(
        "alice:secret",
        1,
        Problem::PlainText {
            username: "alice".into(),
        },
    );
    check_error(
        "alice:$1$abc$def",
        1,
        Problem::UnknownHashType {
            username: "alice".into(),
            prefix: "$1$".into(),
        },
    );
    check_error(
        "a:$7$101$abc",
        1,
        bad(
            "a",
            HashProblem::FieldCount {
                expected: "`$7$`, iterations, salt and hash",
            },
        ),
    );
    check_error(
        &format!("a:$7$100${salt12}${hash64}"),
        1,
        bad(
            "a",
            HashProblem::Iterations {
                value: "100".into(),
                min: 101,
                max: 1_000_000,
            },
        ),
    );
    check_error(
        &format!("a:$7$x${salt12}${hash64}"),
        1,
        bad(
            "a",
            HashProblem::Iterations {
                value: "x".into(),
                min: 101,
                max: 1_000_000,
            },
        ),
    );
    check_error(
        &format!("a:$7$101$!!!${hash64}"),
        1,
        bad("a", HashProblem::Base64 { field: "salt" }),
    );
    check_error(
        &format!("a:$6$c2FsdA==${hash64}"),
        1,
        bad("a", HashProblem::SaltLength { bytes: 4 }),
    );
    check_error(
        &format!("a:$6${salt12}$c2FsdA=="),
        1,
        bad("a", HashProblem::HashLength { bytes: 4 }),
    );
    check_error(
        "a:$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$ZXhhbXBsZWhhc2g",
        1,
        bad(
            "a",
            HashProblem::Argon2Variant {
                algorithm: "argon2i".into(),
            },
        ),
    );
    check_error(
        "a:$argon2id$v=19$m=1048576,t=1,p=1$c29tZXNhbHQ$ZXhhbXBsZWhhc2g",
        1,
        bad(
            "a",
            HashProblem::Argon2Cost {
                parameter: "m (memory, KiB)",
                value: 1_048_576,
                max: 262_144,
            },
        ),
    );
    check_error(
        &format!("{MOSQUITTO_2_0}alice:$6${salt12}${hash64}"),
        3,
        Problem::DuplicateUser {
            username: "alice".into(),
            first_line: 1,
        },
    );
}

#[test]
fn argon2_garbage_is_an_error_not_a_panic() {
    for text in [
        "a:$argon2id$",
        "a:$argon2id$v=19$m=64,t=1,p=1",
        "a:$argon2id$$$$$",
        "a:$argon2",
    ] {
        let error = PasswordFile::parse(text, "t").unwrap_err();
        assert!(
            matches!(
                error.problem(),
                Some(Problem::BadHash { .. } | Problem::UnknownHashType { .. })
            ),
            "{text}: {error}"
        );
    }
}

#[test]
fn error_messages_name_file_line_and_fix() {
    let error = PasswordFile::parse("\nalice:secret\n", "/etc/ringmq/passwd").unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("/etc/ringmq/passwd:2: user `alice` has a plain-text password"));
    assert!(message.contains("mosquitto_passwd -U"), "{message}");
}

#[test]
fn empty_file_lets_nobody_in() {
    let file = PasswordFile::parse("# nobody\n", "t").unwrap();
    assert!(file.is_empty());
    assert!(!file.verify("alice", b"secret"));
}

#[test]
fn an_unknown_user_costs_about_what_a_wrong_password_costs() {
    // A slow entry makes the cost visible over timer noise.
    let hash = crate::auth::passwd::hash_password(b"pw", crate::auth::HashAlgorithm::Sha512Pbkdf2)
        .unwrap();
    let file = PasswordFile::parse(&format!("slow:{hash}\n"), "t").unwrap();
    let time = |user: &str| {
        let start = std::time::Instant::now();
        assert!(!file.verify(user, b"wrong"));
        start.elapsed()
    };
    // The fastest of several alternating tries: a busy machine only ever adds time, so the
    // minimum is what the verification itself costs.
    let (mut wrong_password, mut unknown_user) =
        (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..7 {
        wrong_password = wrong_password.min(time("slow"));
        unknown_user = unknown_user.min(time("nobody"));
    }
    assert!(
        unknown_user * 2 > wrong_password && wrong_password * 2 > unknown_user,
        "unknown user {unknown_user:?}, wrong password {wrong_password:?}"
    );
}
