//! What this instance's subscribers listen to, for `PubSub.ListChannels`: per
//! subscription name (a channel, pattern, sharded channel or topic pattern, in
//! its tenant), how many open subscriptions include it and how many messages
//! were dropped for them. In memory: a subscription lives in the instance that
//! serves its stream, and an entry goes when its last subscription ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::page;
use crate::proto::{ChannelActivity, SubscriptionKind};

/// A name in the directory: the qualified name and its kind.
type Name = (String, SubscriptionKind);

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    subscribers: u64,
    dropped: u64,
}

/// The active subscription names of this instance.
#[derive(Debug, Default)]
pub struct Directory {
    names: Mutex<BTreeMap<Name, Counts>>,
}

impl Directory {
    fn names(&self) -> MutexGuard<'_, BTreeMap<Name, Counts>> {
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one subscription of `names` (qualified) until the returned
    /// membership is dropped. A name given twice counts once.
    pub fn join(self: &Arc<Self>, mut names: Vec<Name>) -> Membership {
        names.sort();
        names.dedup();
        let mut entries = self.names();
        for name in &names {
            entries.entry(name.clone()).or_default().subscribers += 1;
        }
        drop(entries);
        Membership {
            directory: self.clone(),
            names,
        }
    }

    /// A page of at most `size` active names after the position `after`,
    /// sorted by name then kind, as `visible` shows each qualified name to the
    /// caller (None: not the caller's); and whether more follow. Each item
    /// comes with its position for the next page token.
    pub fn page(
        &self,
        visible: impl Fn(&str) -> Option<String>,
        after: Option<&str>,
        size: usize,
    ) -> (Vec<(String, ChannelActivity)>, bool) {
        let mut listed: Vec<(String, ChannelActivity)> = self
            .names()
            .iter()
            .filter_map(|((qualified, kind), counts)| {
                let name = visible(qualified)?;
                Some((
                    position(&name, *kind),
                    ChannelActivity {
                        name,
                        kind: (*kind).into(),
                        subscribers: counts.subscribers,
                        dropped: counts.dropped,
                    },
                ))
            })
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        page::slice(listed, |(position, _)| position.as_str(), after, size)
    }
}

/// The page position of a name: the name, then its kind. `\n` sorts before
/// every character a name may hold, so positions sort as (name, kind) does.
fn position(name: &str, kind: SubscriptionKind) -> String {
    format!("{name}\n{}", kind as i32)
}

/// One subscription's place in the directory; dropping it leaves.
#[derive(Debug)]
pub struct Membership {
    directory: Arc<Directory>,
    names: Vec<Name>,
}

impl Membership {
    /// `count` messages were dropped for this subscription.
    pub fn dropped(&self, count: u64) {
        let mut entries = self.directory.names();
        for name in &self.names {
            if let Some(counts) = entries.get_mut(name) {
                counts.dropped += count;
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut entries = self.directory.names();
        for name in &self.names {
            if let Some(counts) = entries.get_mut(name) {
                counts.subscribers -= 1;
                if counts.subscribers == 0 {
                    entries.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> Name {
        (name.to_owned(), SubscriptionKind::Channel)
    }

    #[test]
    fn names_count_their_subscriptions_and_leave_with_the_last() {
        let directory = Arc::new(Directory::default());
        let first = directory.join(vec![channel("orders"), channel("orders")]);
        let second = directory.join(vec![
            channel("orders"),
            ("orders".to_owned(), SubscriptionKind::Pattern),
        ]);
        second.dropped(3);
        let listed = |d: &Directory| {
            d.page(|q| Some(q.to_owned()), None, 10)
                .0
                .into_iter()
                .map(|(_, a)| (a.name, a.kind, a.subscribers, a.dropped))
                .collect::<Vec<_>>()
        };
        let (channel_kind, pattern_kind) = (
            SubscriptionKind::Channel as i32,
            SubscriptionKind::Pattern as i32,
        );
        assert_eq!(
            listed(&directory),
            [
                ("orders".to_owned(), channel_kind, 2, 3),
                ("orders".to_owned(), pattern_kind, 1, 3)
            ]
        );
        drop(second);
        assert_eq!(
            listed(&directory),
            [("orders".to_owned(), channel_kind, 1, 3)]
        );
        drop(first);
        assert!(listed(&directory).is_empty());
    }

    #[test]
    fn pages_follow_name_then_kind_and_show_only_the_callers_names() {
        let directory = Arc::new(Directory::default());
        let _held = directory.join(vec![
            channel("b"),
            channel("a-b"),
            ("a".to_owned(), SubscriptionKind::Topic),
            channel("a"),
            channel("acme/secret"),
        ]);
        let mine = |q: &str| (!q.contains('/')).then(|| q.to_owned());
        let (first, more) = directory.page(mine, None, 2);
        assert!(more);
        let names: Vec<_> = first
            .iter()
            .map(|(_, a)| (a.name.clone(), a.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("a".to_owned(), SubscriptionKind::Channel as i32),
                ("a".to_owned(), SubscriptionKind::Topic as i32)
            ]
        );
        let (rest, more) = directory.page(mine, Some(&first[1].0), 10);
        assert!(!more);
        let names: Vec<_> = rest.iter().map(|(_, a)| a.name.as_str()).collect();
        assert_eq!(names, ["a-b", "b"]);
    }
}
