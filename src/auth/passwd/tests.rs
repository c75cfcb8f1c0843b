use super::*;
use crate::auth::PasswordFile;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ringmq-passwd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn batch(password: &str, hash: HashAlgorithm) -> PasswdOptions {
    PasswdOptions {
        password: Some(password.to_owned()),
        hash,
        ..PasswdOptions::default()
    }
}

#[test]
fn create_update_delete_round_trip() {
    let dir = TempDir::new("round-trip");
    let file = dir.0.join("passwords");
    let create = PasswdOptions {
        create: true,
        ..batch("one", HashAlgorithm::Sha512Pbkdf2)
    };
    assert_eq!(
        passwd(&file, "alice", &create).unwrap(),
        PasswdOutcome::Added
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pbkdf2 = batch("two", HashAlgorithm::Sha512Pbkdf2);
    assert_eq!(passwd(&file, "bob", &pbkdf2).unwrap(), PasswdOutcome::Added);
    assert_eq!(
        passwd(&file, "alice", &pbkdf2).unwrap(),
        PasswdOutcome::Updated
    );
    let passwords = PasswordFile::load(&file).unwrap();
    assert!(passwords.verify("alice", b"two"));
    assert!(!passwords.verify("alice", b"one"));
    assert!(passwords.verify("bob", b"two"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$7$1000$"), "{text}");

    let delete = PasswdOptions {
        delete: true,
        ..PasswdOptions::default()
    };
    assert_eq!(
        passwd(&file, "alice", &delete).unwrap(),
        PasswdOutcome::Deleted
    );
    let passwords = PasswordFile::load(&file).unwrap();
    assert!(!passwords.contains("alice"));
    assert!(passwords.contains("bob"));
    assert!(matches!(
        passwd(&file, "alice", &delete),
        Err(PasswdError::NoSuchUser { .. })
    ));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn default_hash_is_argon2id_as_mosquitto_2_1_writes_it() {
    let dir = TempDir::new("argon2");
    let file = dir.0.join("passwords");
    let options = PasswdOptions {
        create: true,
        ..batch("s3cret", HashAlgorithm::default())
    };
    passwd(&file, "carol", &options).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("carol:$argon2id$v=19$m=47104,t=1,p=1$"),
        "{text}"
    );
    let passwords = PasswordFile::load(&file).unwrap();
    assert!(passwords.verify("carol", b"s3cret"));
    assert!(!passwords.verify("carol", b"s3cret!"));
}

#[test]
fn mosquitto_passwd_and_ringmq_passwd_edit_each_others_files() {
    let dir = TempDir::new("both");
    let file = dir.0.join("passwords");
    let name = file.to_str().unwrap();
    let mosquitto_passwd = |args: &[&str]| {
        let status = Command::new("mosquitto_passwd")
            .args(args)
            .status()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run mosquitto_passwd ({error}): \
                     install mosquitto (apt-get install mosquitto)"
                )
            });
        assert!(status.success(), "mosquitto_passwd {args:?}: {status}");
    };
    mosquitto_passwd(&["-c", "-b", name, "mosq", "mosq-pw"]);
    passwd(
        &file,
        "ours",
        &batch("ours-pw", HashAlgorithm::Sha512Pbkdf2),
    )
    .unwrap();
    let passwords = PasswordFile::load(&file).unwrap();
    assert!(passwords.verify("mosq", b"mosq-pw"));
    assert!(passwords.verify("ours", b"ours-pw"));
    // Mosquitto 2.0 edits a file holding our `$7$` entry (it refuses comments and blank lines,
    // so this file has none).
    mosquitto_passwd(&["-b", name, "other", "other-pw"]);
    mosquitto_passwd(&["-D", name, "mosq"]);
    let passwords = PasswordFile::load(&file).unwrap();
    assert!(!passwords.contains("mosq"));
    assert!(passwords.verify("ours", b"ours-pw"));
    assert!(passwords.verify("other", b"other-pw"));
}

#[test]
fn comments_blank_lines_and_other_entries_are_kept() {
    let dir = TempDir::new("keep");
    let file = dir.0.join("passwords");
    let original = "# managed by hand\n\nalice:$6$hy4QqP0ohFrqAGur$wF1SB0GjnxaJPnoZJLkYwu2IYkXJwptnKLvo1NCTvpV3xiSCedOt9mjUvGPeiVRok2FkGBtPWghiwNRZJNGvMA==\n# end\n";
    std::fs::write(&file, original).unwrap();
    passwd(&file, "bob", &batch("bob-pw", HashAlgorithm::Sha512Pbkdf2)).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(original), "{text}");
    assert!(text.ends_with('\n'));
    passwd(
        &file,
        "bob",
        &PasswdOptions {
            delete: true,
            ..PasswdOptions::default()
        },
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
}

#[test]
fn refuses_bad_usernames_and_passwords_and_missing_files() {
    let dir = TempDir::new("refuse");
    let file = dir.0.join("passwords");
    let options = batch("pw", HashAlgorithm::Sha512Pbkdf2);
    for username in ["", "a:b", "#admin", "new\nline", "  "] {
        assert!(
            matches!(
                passwd(&file, username, &options),
                Err(PasswdError::Username { .. })
            ),
            "{username:?}"
        );
    }
    assert!(matches!(
        passwd(&file, "alice", &batch("", HashAlgorithm::Sha512Pbkdf2)),
        Err(PasswdError::Password { .. })
    ));
    // Without -c the file must exist.
    assert!(matches!(
        passwd(&file, "alice", &options),
        Err(PasswdError::Read { .. })
    ));
    let both = PasswdOptions {
        create: true,
        delete: true,
        ..PasswdOptions::default()
    };
    assert!(matches!(
        passwd(&file, "alice", &both),
        Err(PasswdError::CreateAndDelete)
    ));
}

#[test]
fn command_line_reads_like_mosquitto_passwd() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        passwd: PasswdArgs,
    }
    let cli =
        Cli::try_parse_from(["passwd", "-c", "-b", "-H", "sha512-pbkdf2", "f", "u", "p"]).unwrap();
    assert!(cli.passwd.create && cli.passwd.batch && !cli.passwd.delete);
    assert_eq!(cli.passwd.hash, HashAlgorithm::Sha512Pbkdf2);
    assert_eq!(cli.passwd.password.as_deref(), Some("p"));
    let cli = Cli::try_parse_from(["passwd", "-D", "f", "u"]).unwrap();
    assert!(cli.passwd.delete);
    assert_eq!(cli.passwd.hash, HashAlgorithm::Argon2id);
    // A password on the command line needs -b, and -c conflicts with -D.
    assert!(Cli::try_parse_from(["passwd", "f", "u", "p"]).is_err());
    assert!(Cli::try_parse_from(["passwd", "-c", "-D", "f", "u"]).is_err());
}

#[test]
fn no_terminal_and_no_password_is_an_error() {
    // Under `cargo test` stdin is not a terminal.
    if io::stdin().is_terminal() {
        return;
    }
    let dir = TempDir::new("prompt");
    let options = PasswdOptions {
        create: true,
        ..PasswdOptions::default()
    };
    assert!(matches!(
        passwd(&dir.0.join("p"), "alice", &options),
        Err(PasswdError::NoTerminal)
    ));
}
