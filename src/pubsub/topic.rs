//! AMQP-style topic patterns: `.`-separated words, where `*` matches exactly one
//! word and `#` matches zero or more words (`order.*.us`, `order.#`, `#.eu`).
//!
//! Redis cannot match these itself, so Redwire subscribes to a broader Redis glob
//! (the literal words before the first wildcard, then `*`) and filters each message
//! exactly with [`TopicPattern::matches`].

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    One,
    Many,
}

impl TopicPattern {
    /// Parses a pattern whose words were already validated.
    pub fn parse(pattern: &str) -> Self {
        let words = pattern
            .split('.')
            .map(|w| match w {
                "*" => Word::One,
                "#" => Word::Many,
                literal => Word::Literal(literal.to_owned()),
            })
            .collect();
        Self { words }
    }

    /// True when the pattern has no wildcard (it names one channel).
    pub fn is_exact(&self) -> bool {
        self.words.iter().all(|w| matches!(w, Word::Literal(_)))
    }

    /// The Redis glob (without Redwire's prefix) that matches a superset of the
    /// channels this pattern matches: the literal words before the first wildcard,
    /// then `*`. Channel names contain no glob characters, so the prefix is literal.
    pub fn glob(&self) -> String {
        let literal: Vec<&str> = self
            .words
            .iter()
            .map_while(|w| match w {
                Word::Literal(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        if literal.len() == self.words.len() {
            return literal.join(".");
        }
        format!("{}*", literal.join("."))
    }

    /// Whether `channel` matches the pattern exactly.
    pub fn matches(&self, channel: &str) -> bool {
        let words: Vec<&str> = channel.split('.').collect();
        matches_from(&self.words, &words)
    }
}

fn matches_from(pattern: &[Word], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((Word::Many, rest)) => {
            (0..=words.len()).any(|skip| matches_from(rest, &words[skip..]))
        }
        Some((Word::One, rest)) => !words.is_empty() && matches_from(rest, &words[1..]),
        Some((Word::Literal(l), rest)) => {
            words.first() == Some(&l.as_str()) && matches_from(rest, &words[1..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, channel: &str) -> bool {
        TopicPattern::parse(pattern).matches(channel)
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(m("order.*.us", "order.created.us"));
        assert!(!m("order.*.us", "order.us"));
        assert!(!m("order.*.us", "order.a.b.us"));
        assert!(!m("order.*", "order"));
        assert!(m("*", "order"));
        assert!(!m("*", "order.x"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(m("order.#", "order"));
        assert!(m("order.#", "order.created"));
        assert!(m("order.#", "order.created.us.east"));
        assert!(!m("order.#", "orders.created"));
        assert!(m("#", "anything.at.all"));
        assert!(m("#.eu", "eu"));
        assert!(m("#.eu", "order.created.eu"));
        assert!(!m("#.eu", "order.eu.x"));
        assert!(m("order.#.eu", "order.eu"));
        assert!(m("a.#.b.#.c", "a.x.b.y.z.c"));
    }

    #[test]
    fn literals_must_match_whole_words() {
        assert!(m("order.created", "order.created"));
        assert!(!m("order.created", "order.createdX"));
        assert!(!m("order", "order.created"));
    }

    #[test]
    fn globs_cover_every_match() {
        assert_eq!(TopicPattern::parse("order.*.us").glob(), "order*");
        assert_eq!(TopicPattern::parse("order.#").glob(), "order*");
        assert_eq!(TopicPattern::parse("#").glob(), "*");
        assert_eq!(TopicPattern::parse("order.created").glob(), "order.created");
        assert!(TopicPattern::parse("order.created").is_exact());
        assert!(!TopicPattern::parse("order.#").is_exact());
    }
}
