//! Topic names, topic filters and matching (MQTT 5.0 §4.7, 3.1.1 §4.7).
//!
//! - Topic names and filters are at least one character [MQTT-4.7.3-1], contain no U+0000
//!   [MQTT-4.7.3-2] and are at most 65,535 bytes [MQTT-4.7.3-3].
//! - A topic name has no wildcards [MQTT-3.3.2-2].
//! - In a filter, `#` is the last level and alone in it [MQTT-4.7.1-1]; `+` is alone in its level
//!   [MQTT-4.7.1-2]. `#` also matches the parent level: `a/#` matches `a`.
//! - Topics starting with `$` are not matched by a filter starting with a wildcard [MQTT-4.7.2-1].
//! - Shared subscriptions are `$share/{ShareName}/{filter}` with a ShareName of at least one
//!   character and no `/`, `+` or `#` [MQTT-4.8.2-1], [MQTT-4.8.2-2].
//!
//! Matching walks both strings level by level with no recursion and no allocation.

use bytestring::ByteString;

use super::types::ReasonCode;
use super::wire::FIELD_BYTES_MAX;

/// A topic name or filter that breaks §4.7.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    #[error("topic name is empty")]
    EmptyName,
    #[error("topic name is over 65535 bytes")]
    NameTooLong,
    #[error("topic name contains U+0000")]
    NullInName,
    #[error("topic name contains a wildcard")]
    WildcardInName,
    #[error("topic filter is empty")]
    EmptyFilter,
    #[error("topic filter is over 65535 bytes")]
    FilterTooLong,
    #[error("topic filter contains U+0000")]
    NullInFilter,
    #[error("'#' is not alone in the last level of the topic filter")]
    MisplacedMultiLevelWildcard,
    #[error("'+' is not alone in its level of the topic filter")]
    MisplacedSingleLevelWildcard,
    #[error("share name is empty or contains '+' or '#'")]
    InvalidShareName,
    #[error("shared subscription without a topic filter")]
    MissingSharedFilter,
}

impl TopicError {
    /// 0x90 Topic Name invalid for names, 0x8F Topic Filter invalid for filters.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            TopicError::EmptyName
            | TopicError::NameTooLong
            | TopicError::NullInName
            | TopicError::WildcardInName => ReasonCode::TOPIC_NAME_INVALID,
            _ => ReasonCode::TOPIC_FILTER_INVALID,
        }
    }
}

/// Checks a PUBLISH or Will topic name.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::EmptyName);
    }
    if name.len() > FIELD_BYTES_MAX {
        return Err(TopicError::NameTooLong);
    }
    for &byte in name.as_bytes() {
        match byte {
            0 => return Err(TopicError::NullInName),
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            _ => {}
        }
    }
    Ok(())
}

/// A topic filter checked against the wildcard rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    pub fn parse(filter: ByteString) -> Result<TopicFilter, TopicError> {
        if filter.is_empty() {
            return Err(TopicError::EmptyFilter);
        }
        if filter.len() > FIELD_BYTES_MAX {
            return Err(TopicError::FilterTooLong);
        }
        if filter.as_bytes().contains(&0) {
            return Err(TopicError::NullInFilter);
        }
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            let last = levels.peek().is_none();
            if level.contains('#') && (level != "#" || !last) {
                return Err(TopicError::MisplacedMultiLevelWildcard);
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::MisplacedSingleLevelWildcard);
            }
        }
        Ok(TopicFilter(filter))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    pub fn has_wildcards(&self) -> bool {
        self.0
            .as_bytes()
            .iter()
            .any(|&byte| byte == b'+' || byte == b'#')
    }

    pub fn levels(&self) -> usize {
        topic_levels(&self.0)
    }

    /// True when this filter matches the topic name `topic` (§4.7).
    pub fn matches(&self, topic: &str) -> bool {
        matches(&self.0, topic)
    }
}

/// A SUBSCRIBE filter: plain, or shared by a group (§4.8.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subscription {
    Normal(TopicFilter),
    Shared {
        group: ByteString,
        filter: TopicFilter,
    },
}

impl Subscription {
    /// The filter that topics are matched against (without `$share/{group}/`).
    pub fn filter(&self) -> &TopicFilter {
        match self {
            Subscription::Normal(filter) | Subscription::Shared { filter, .. } => filter,
        }
    }
}

const SHARE_PREFIX: &str = "$share/";

/// Parses a SUBSCRIBE or UNSUBSCRIBE filter, recognising `$share/{ShareName}/{filter}`.
pub fn parse_subscription(subscription: ByteString) -> Result<Subscription, TopicError> {
    let Some(rest) = subscription.strip_prefix(SHARE_PREFIX) else {
        return TopicFilter::parse(subscription).map(Subscription::Normal);
    };
    let Some((group, filter)) = rest.split_once('/') else {
        return Err(TopicError::MissingSharedFilter);
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if filter.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    let group = subscription.slice_ref(group);
    let filter = TopicFilter::parse(subscription.slice_ref(filter))?;
    Ok(Subscription::Shared { group, filter })
}

/// True when the (valid) filter `filter` matches the (valid) topic name `topic` (§4.7).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(expected), Some(level)) if expected == level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The number of levels of a topic name or filter: one more than its `/` separators.
pub fn topic_levels(topic: &str) -> usize {
    topic
        .as_bytes()
        .iter()
        .filter(|&&byte| byte == b'/')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(name: &str, expected: Result<(), TopicError>) {
        assert_eq!(validate_topic_name(name), expected, "name {name:?}");
    }

    fn check_filter(filter: &str, expected: Result<(), TopicError>) {
        let parsed = TopicFilter::parse(ByteString::from(filter)).map(|_| ());
        assert_eq!(parsed, expected, "filter {filter:?}");
    }

    fn check_match(filter: &str, topic: &str, expected: bool) {
        assert_eq!(matches(filter, topic), expected, "{filter:?} vs {topic:?}");
    }

    #[test]
    fn topic_names() {
        check_name("a/b/c", Ok(()));
        check_name("/", Ok(()));
        check_name("$SYS/broker", Ok(()));
        check_name("\u{feff}bom", Ok(()));
        check_name("ctl\u{1}\u{7f}\u{9f}", Ok(()));
        check_name("", Err(TopicError::EmptyName));
        check_name("a/+", Err(TopicError::WildcardInName));
        check_name("a/#", Err(TopicError::WildcardInName));
        check_name("a\0b", Err(TopicError::NullInName));
        check_name(&"x".repeat(65_535), Ok(()));
        check_name(&"x".repeat(65_536), Err(TopicError::NameTooLong));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "a/+/b",
            "+/#",
            "a//b",
            "$SYS/#",
            "sport/+/player1",
        ] {
            check_filter(ok, Ok(()));
        }
        check_filter("", Err(TopicError::EmptyFilter));
        check_filter("a/#/b", Err(TopicError::MisplacedMultiLevelWildcard));
        check_filter("a#", Err(TopicError::MisplacedMultiLevelWildcard));
        check_filter("a/b#", Err(TopicError::MisplacedMultiLevelWildcard));
        check_filter("a+", Err(TopicError::MisplacedSingleLevelWildcard));
        check_filter("a/+b/c", Err(TopicError::MisplacedSingleLevelWildcard));
        check_filter("a\0", Err(TopicError::NullInFilter));
        check_filter(&"x".repeat(65_536), Err(TopicError::FilterTooLong));
        assert_eq!(
            TopicError::EmptyFilter.reason_code(),
            ReasonCode::TOPIC_FILTER_INVALID
        );
        assert_eq!(
            TopicError::WildcardInName.reason_code(),
            ReasonCode::TOPIC_NAME_INVALID
        );
    }

    #[test]
    fn filter_accessors() {
        let filter = TopicFilter::parse(ByteString::from("a/+/c")).unwrap();
        assert_eq!(filter.as_str(), "a/+/c");
        assert!(filter.has_wildcards());
        assert_eq!(filter.levels(), 3);
        assert!(
            !TopicFilter::parse(ByteString::from("a/b"))
                .unwrap()
                .has_wildcards()
        );
        assert_eq!(topic_levels("a"), 1);
        assert_eq!(topic_levels("/"), 2);
    }

    #[test]
    fn matching() {
        check_match("sport/tennis/player1/#", "sport/tennis/player1", true);
        check_match(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        );
        check_match(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        );
        check_match("sport/#", "sport", true);
        check_match("#", "a/b", true);
        check_match("#", "/", true);
        check_match("sport/tennis/+", "sport/tennis/player1", true);
        check_match("sport/tennis/+", "sport/tennis/player1/ranking", false);
        check_match("sport/+", "sport", false);
        check_match("sport/+", "sport/", true);
        check_match("+/+", "/finance", true);
        check_match("/+", "/finance", true);
        check_match("+", "/finance", false);
        check_match("a/b", "a/b", true);
        check_match("a/b", "a/bc", false);
        check_match("a/b", "a", false);
        check_match("a", "a/b", false);
        check_match("#", "$SYS/x", false);
        check_match("+/monitor/Clients", "$SYS/monitor/Clients", false);
        check_match("$SYS/#", "$SYS/monitor/Clients", true);
        check_match("$SYS/monitor/+", "$SYS/monitor/Clients", true);
        check_match("a/+/#", "a/b", true);
        check_match("a/+/#", "a", false);
    }

    fn check_subscription(input: &str, expected: Result<(Option<&str>, &str), TopicError>) {
        let parsed = parse_subscription(ByteString::from(input));
        let parsed = parsed.map(|subscription| match subscription {
            Subscription::Normal(filter) => (None, filter.as_str().to_owned()),
            Subscription::Shared { group, filter } => {
                (Some(group.to_string()), filter.as_str().to_owned())
            }
        });
        let expected =
            expected.map(|(group, filter)| (group.map(str::to_owned), filter.to_owned()));
        assert_eq!(parsed, expected, "subscription {input:?}");
    }

    #[test]
    fn shared_subscriptions() {
        check_subscription("a/b", Ok((None, "a/b")));
        check_subscription("$share/g/a/#", Ok((Some("g"), "a/#")));
        check_subscription("$share/g/+", Ok((Some("g"), "+")));
        check_subscription("$share//a", Err(TopicError::InvalidShareName));
        check_subscription("$share/g+/a", Err(TopicError::InvalidShareName));
        check_subscription("$share/#/a", Err(TopicError::InvalidShareName));
        check_subscription("$share/g", Err(TopicError::MissingSharedFilter));
        check_subscription("$share/g/", Err(TopicError::MissingSharedFilter));
        check_subscription(
            "$share/g/a/#/b",
            Err(TopicError::MisplacedMultiLevelWildcard),
        );
        check_subscription("$sharex/g/a", Ok((None, "$sharex/g/a")));
    }
}
