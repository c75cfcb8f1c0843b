//! The Mosquitto password-file parser on arbitrary text: it must never panic, and every user it
//! accepts must be found by name. (Verification is not fuzzed: its cost is set by the file's own hash
//! parameters, which the operator chooses.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_fuzz::auth::PasswordFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = PasswordFile::parse(text, "fuzz.passwd") else {
        return;
    };
    // Every name the text could give is looked up (accepted or not) without panicking.
    let found = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(user, _)| file.contains(user))
        .count();
    assert!(found >= file.len().min(1) || file.is_empty());
    assert_eq!(file.is_empty(), file.len() == 0);
});
