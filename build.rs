//! Stamps the binary with the commit it was built from, for `ringmq --version` and the start-up
//! log: `BUILD_VERSION` is "0.1.0 (commit 1a2b3c4d5e6f)", or "0.1.0" alone when the source is
//! not a git checkout (a crate tarball) or git is missing. `BUILD_GIT_COMMIT` in the build
//! environment names the commit instead, for builds from an exported tree.
//!
//! Only release builds (what is packaged and deployed) look at git: a stamp makes every commit
//! and checkout rebuild the crate, which debug builds during development need not pay for.

use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rerun-if-env-changed=BUILD_GIT_COMMIT");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let commit = std::env::var("BUILD_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.trim().is_empty())
        .or_else(|| if release { git_commit() } else { None });
    let stamped = match commit {
        Some(commit) => format!("{version} (commit {})", commit.trim()),
        None => version,
    };
    println!("cargo:rustc-env=BUILD_VERSION={stamped}");
}

/// The abbreviated HEAD commit, with a rebuild whenever HEAD moves.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD names the branch; the branch's ref file (or packed-refs) moves on each commit.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "--quiet", "HEAD"])
        && let Some(file) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={file}");
    }
    Some(commit)
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
