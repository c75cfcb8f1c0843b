//! A bridge's topic rules (Mosquitto's `topic <pattern> <direction> <qos> <local> <remote>`):
//! which filters to subscribe to on each side, and how a topic is rewritten when it crosses.
//! Pure: no I/O.
//!
//! An `out` rule subscribes here to `local_prefix + topic` and publishes to the remote under
//! `remote_prefix + rest`, where `rest` is the local topic without `local_prefix`; an `in` rule
//! the other way round.

use crate::config::{Direction, TopicRule};
use crate::protocol::{QoS, topic};

/// The rules of one bridge, in the order of the config file.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<TopicRule>,
}

/// A filter to subscribe to on one side, with the QoS of its rule and the rule's index (the
/// local side uses index + 1 as the Subscription Identifier, to tell the rule of a delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub filter: String,
    pub qos: QoS,
    pub rule: usize,
}

pub fn qos_of(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Rules {
    pub fn new(rules: Vec<TopicRule>) -> Rules {
        Rules { rules }
    }

    /// The local filters of the `out` (and `both`) rules.
    pub fn local_filters(&self) -> Vec<Filter> {
        self.filters(Direction::is_out, |rule| &rule.local_prefix)
    }

    /// The remote filters of the `in` (and `both`) rules.
    pub fn remote_filters(&self) -> Vec<Filter> {
        self.filters(Direction::is_in, |rule| &rule.remote_prefix)
    }

    fn filters(
        &self,
        wanted: fn(Direction) -> bool,
        prefix: fn(&TopicRule) -> &String,
    ) -> Vec<Filter> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| wanted(rule.direction))
            .map(|(index, rule)| Filter {
                filter: format!("{}{}", prefix(rule), rule.topic),
                qos: qos_of(rule.qos),
                rule: index,
            })
            .collect()
    }

    /// The remote topic of a local message delivered for rule `rule` (its Subscription
    /// Identifier minus one); any matching `out` rule when the identifier is missing.
    pub fn outbound(&self, rule: Option<usize>, local_topic: &str) -> Option<String> {
        let chosen = rule
            .and_then(|index| self.rules.get(index))
            .filter(|rule| rule.direction.is_out() && Self::local_match(rule, local_topic));
        let rule = chosen.or_else(|| {
            self.rules
                .iter()
                .find(|rule| rule.direction.is_out() && Self::local_match(rule, local_topic))
        })?;
        let rest = local_topic.strip_prefix(rule.local_prefix.as_str())?;
        Some(format!("{}{rest}", rule.remote_prefix))
    }

    /// The local topic of a message the remote sent for an `in` rule; `None` when no rule
    /// matches (the remote sent something nobody subscribed to).
    pub fn inbound(&self, remote_topic: &str) -> Option<String> {
        let rule = self.rules.iter().find(|rule| {
            rule.direction.is_in()
                && topic::matches(
                    &format!("{}{}", rule.remote_prefix, rule.topic),
                    remote_topic,
                )
        })?;
        let rest = remote_topic.strip_prefix(rule.remote_prefix.as_str())?;
        Some(format!("{}{rest}", rule.local_prefix))
    }

    fn local_match(rule: &TopicRule, local_topic: &str) -> bool {
        topic::matches(&format!("{}{}", rule.local_prefix, rule.topic), local_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(topic: &str, direction: Direction, local: &str, remote: &str) -> TopicRule {
        TopicRule {
            topic: topic.into(),
            direction,
            qos: 1,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    #[test]
    fn topics_are_rewritten_with_the_prefixes() {
        let rules = Rules::new(vec![
            rule("sensors/#", Direction::Out, "", "site1/"),
            rule("cmd/+", Direction::In, "local/", "site1/"),
            rule("both/#", Direction::Both, "l/", "r/"),
            rule("", Direction::Out, "alone", "mapped/alone"),
        ]);
        let check_out = |index, topic: &str, expected: Option<&str>| {
            assert_eq!(rules.outbound(index, topic).as_deref(), expected, "{topic}");
        };
        check_out(Some(0), "sensors/a/t", Some("site1/sensors/a/t"));
        check_out(None, "sensors/a/t", Some("site1/sensors/a/t"));
        check_out(Some(1), "sensors/x", Some("site1/sensors/x"));
        check_out(None, "cmd/x", None);
        check_out(None, "l/both/x", Some("r/both/x"));
        check_out(None, "alone", Some("mapped/alone"));
        let check_in = |topic: &str, expected: Option<&str>| {
            assert_eq!(rules.inbound(topic).as_deref(), expected, "{topic}");
        };
        check_in("site1/cmd/reboot", Some("local/cmd/reboot"));
        check_in("site1/sensors/x", None);
        check_in("r/both/y", Some("l/both/y"));
        assert_eq!(
            rules.local_filters(),
            vec![
                Filter {
                    filter: "sensors/#".into(),
                    qos: QoS::AtLeastOnce,
                    rule: 0
                },
                Filter {
                    filter: "l/both/#".into(),
                    qos: QoS::AtLeastOnce,
                    rule: 2
                },
                Filter {
                    filter: "alone".into(),
                    qos: QoS::AtLeastOnce,
                    rule: 3
                },
            ]
        );
        let remote: Vec<String> = rules
            .remote_filters()
            .into_iter()
            .map(|f| f.filter)
            .collect();
        assert_eq!(remote, ["site1/cmd/+", "r/both/#"]);
    }
}
