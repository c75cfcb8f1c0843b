//! Mosquitto ACL files, read unchanged (`man mosquitto.conf`, `acl_file`).
//!
//! ```text
//! # Lines before the first `user` apply to anonymous clients.
//! topic read public/#
//! user alice
//! # The access word is optional (readwrite); the topic is the rest of the line.
//! topic alice/#
//! topic deny alice/secret
//! # Patterns apply to every client.
//! pattern write sensor/%u/data
//! ```
//!
//! `#` starts a comment only at the beginning of a line, as in Mosquitto.
//!
//! Rules of evaluation:
//! - Applicable rules: the client's `user` section (the anonymous section if it has no username)
//!   and every `pattern`. A client with a username but no section gets only the patterns.
//! - A `deny` rule that matches wins over any grant; otherwise some grant must match; an empty file
//!   denies everything (CVE-2018-12550).
//! - `$SYS` topics are never writable by clients, and a rule whose first level is a wildcard does
//!   not match topics that begin with `$` (MQTT 3.1.1 §4.7.2, 5.0 §4.7.2).
//! - `%c` (client id) and `%u` (username) must fill a whole level. A client id or username holding
//!   `+`, `#` or `/` never widens a pattern: such a substitution makes grant patterns match nothing
//!   and deny patterns match everything. A pattern with `%u` does not apply to anonymous clients.
//! - Subscribe: the requested filter must be covered by a read rule, i.e. the rule matches every
//!   topic the filter can match (`a/#` covers `a/+/b`; `a/+` does not cover `a/#`). Deny rules
//!   that cover the filter refuse the subscription; deny rules that only overlap it leave it, and
//!   [`Access::Read`] on every delivered topic filters what they deny.
//!
//! Matching walks the levels of the rule and the topic together in one loop: no recursion, no
//! allocation.

use super::error::{AuthFileError, Problem};
use std::collections::HashMap;
use std::path::Path;

/// The access a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive a message published on this topic (checked per delivered message).
    Read,
    /// Publish on this topic (checked per PUBLISH, including wills and retained messages).
    Write,
    /// Subscribe to this filter (checked per SUBSCRIBE entry).
    Subscribe,
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdentity<'a> {
    pub client_id: &'a str,
    /// `None` for anonymous clients.
    pub username: Option<&'a str>,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: Rules,
    users: HashMap<String, Rules>,
    patterns: Rules,
}

#[derive(Debug, Clone, Default)]
struct Rules {
    deny: Vec<Rule>,
    grant: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    filter: Box<str>,
    read: bool,
    write: bool,
    /// A `pattern` rule: `%c` and `%u` levels are substituted.
    pattern: bool,
    uses_client_id: bool,
    uses_username: bool,
}

impl Acl {
    /// Reads and parses an ACL file ([`super::FILE_BYTES_MAX`] at most).
    pub fn load(path: &Path) -> Result<Acl, AuthFileError> {
        let text = super::read_file(path)?;
        Acl::parse(&text, &path.display().to_string())
    }

    /// Parses the text of an ACL file; `origin` (usually the path) names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Acl, AuthFileError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for numbered in super::numbered_lines(text, origin) {
            let (line, content) = numbered?;
            let line_error = |problem| AuthFileError::Line {
                origin: origin.to_owned(),
                line,
                problem,
            };
            match parse_line(content).map_err(line_error)? {
                Line::Empty => {}
                Line::User(name) => user = Some(name.to_owned()),
                Line::Rule(rule) if rule.pattern => acl.patterns.push(rule),
                Line::Rule(rule) => match &user {
                    None => acl.anonymous.push(rule),
                    Some(name) => acl.users.entry(name.clone()).or_default().push(rule),
                },
            }
        }
        Ok(acl)
    }

    /// True if `client` may have `access` to `topic_or_filter`: a topic name for
    /// [`Access::Read`] and [`Access::Write`], a filter for [`Access::Subscribe`]. The caller has
    /// validated it as a topic name or filter.
    pub fn check(&self, client: &ClientIdentity, topic_or_filter: &str, access: Access) -> bool {
        if access == Access::Write && is_sys(topic_or_filter) {
            return false;
        }
        let own = match client.username {
            None => Some(&self.anonymous),
            Some(name) => self.users.get(name),
        };
        let sections = [own, Some(&self.patterns)];
        for rules in sections.iter().flatten() {
            for rule in &rules.deny {
                if rule.covers(client, topic_or_filter, Coverage::Deny) {
                    return false;
                }
            }
        }
        for rules in sections.iter().flatten() {
            for rule in &rules.grant {
                let granted = match access {
                    Access::Read | Access::Subscribe => rule.read,
                    Access::Write => rule.write,
                };
                if granted && rule.covers(client, topic_or_filter, Coverage::Grant) {
                    return true;
                }
            }
        }
        false
    }
}

impl Rules {
    fn push(&mut self, rule: Rule) {
        if rule.read || rule.write {
            self.grant.push(rule);
        } else {
            self.deny.push(rule);
        }
    }
}

fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

enum Line<'a> {
    Empty,
    User(&'a str),
    Rule(Rule),
}

fn parse_line(line: &str) -> Result<Line<'_>, Problem> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    let (keyword, rest) = split_word(line);
    let pattern = match keyword {
        "user" if rest.is_empty() => return Err(Problem::MissingUsername),
        "user" => return Ok(Line::User(rest)),
        "topic" => false,
        "pattern" => true,
        word => {
            return Err(Problem::UnknownKeyword {
                word: word.to_owned(),
            });
        }
    };
    let keyword = if pattern { "pattern" } else { "topic" };
    let (first, after) = split_word(rest);
    // One word is the topic (readwrite); more words start with the access type, and the topic is
    // the rest of the line, spaces included.
    let (read, write, filter) = match (first, after.is_empty()) {
        ("", _) => return Err(Problem::MissingTopic { keyword }),
        (topic, true) => (true, true, topic),
        ("read", false) => (true, false, after),
        ("write", false) => (false, true, after),
        ("readwrite", false) => (true, true, after),
        ("deny", false) => (false, false, after),
        (word, false) => {
            return Err(Problem::UnknownAccess {
                word: word.to_owned(),
            });
        }
    };
    validate_filter(filter, pattern)?;
    let has_level = |name: &str| pattern && filter.split('/').any(|level| level == name);
    Ok(Line::Rule(Rule {
        filter: filter.into(),
        read,
        write,
        pattern,
        uses_client_id: has_level("%c"),
        uses_username: has_level("%u"),
    }))
}

/// The first word of `text` and the rest with its leading white space removed.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

fn validate_filter(filter: &str, pattern: bool) -> Result<(), Problem> {
    let invalid = |why| Problem::InvalidFilter {
        filter: filter.to_owned(),
        why,
    };
    if filter.contains('\0') {
        return Err(invalid("contains a NUL character"));
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level == "#" && levels.peek().is_some() {
            return Err(invalid("`#` must be the last level"));
        }
        if level.len() > 1 && (level.contains('#') || level.contains('+')) {
            return Err(invalid("`+` and `#` must fill a whole level"));
        }
        if pattern
            && level != "%c"
            && level != "%u"
            && (level.contains("%c") || level.contains("%u"))
        {
            return Err(Problem::PartialSubstitution {
                level: level.to_owned(),
            });
        }
    }
    Ok(())
}

/// Which way a doubtful substitution falls: a grant must not widen, a deny must not narrow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Coverage {
    Grant,
    Deny,
}

impl Rule {
    /// True if this rule matches every topic that `requested` (a topic name or a filter) matches.
    fn covers(&self, client: &ClientIdentity, requested: &str, coverage: Coverage) -> bool {
        let username = if self.pattern && self.uses_username {
            match client.username {
                // `%u` means nothing without a username: the pattern does not apply.
                None => return false,
                Some(name) => name,
            }
        } else {
            ""
        };
        let dangerous = (self.uses_client_id && is_dangerous(client.client_id))
            || (self.uses_username && is_dangerous(username));
        if dangerous {
            return coverage == Coverage::Deny;
        }
        let mut rule_levels = self.filter.split('/');
        let mut requested_levels = requested.split('/');
        let mut first = true;
        loop {
            let requested_level = requested_levels.next();
            // A wildcard first level does not match `$` topics.
            let dollar = first && requested_level.is_some_and(|level| level.starts_with('$'));
            match (rule_levels.next(), requested_level) {
                (Some("#"), _) => return !dollar,
                (Some("+"), Some("#")) => {
                    // `#` matches every topic of one level or more, and so does `+/#`.
                    return first
                        && rule_levels.next() == Some("#")
                        && rule_levels.next().is_none();
                }
                (Some("+"), Some(_)) if dollar => return false,
                (Some("+"), Some(_)) => {}
                (Some(rule_level), Some(level)) => {
                    if level == "+" || level == "#" {
                        return false;
                    }
                    let expected = match (self.pattern, rule_level) {
                        (true, "%c") => client.client_id,
                        (true, "%u") => username,
                        _ => rule_level,
                    };
                    if expected != level {
                        return false;
                    }
                }
                (None, None) => return true,
                (Some(_), None) | (None, Some(_)) => return false,
            }
            first = false;
        }
    }
}

/// A client id or username that would act as a wildcard or span levels if substituted.
fn is_dangerous(value: &str) -> bool {
    value.contains(['+', '#', '/'])
}

#[cfg(test)]
mod tests;
