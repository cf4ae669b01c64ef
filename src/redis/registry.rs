//! A set in Redis of every name that was ever used (queues, streams), for
//! listing and for the metrics, which must not scan the keyspace. Each process
//! adds a name once: later uses cost nothing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use super::Redis;
use crate::error::Result;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct NameRegistry {
    key: &'static str,
    /// Names this process already added.
    added: Arc<Mutex<HashSet<String>>>,
}

impl NameRegistry {
    /// The registry kept in the Redis set `key`.
    pub fn new(key: &'static str) -> Self {
        Self {
            key,
            added: Arc::default(),
        }
    }

    /// Adds `name` (a qualified name) the first time this process sees it.
    pub async fn add(&self, redis: &Redis, name: &str) -> Result<()> {
        let known = self.added().contains(name);
        if !known {
            let _: i64 = redis::cmd("SADD")
                .arg(self.key)
                .arg(name)
                .query_async(&mut redis.conn().await?)
                .await?;
            self.added().insert(name.to_owned());
        }
        Ok(())
    }

    /// Every name, sorted.
    pub async fn all(&self, redis: &Redis) -> Result<Vec<String>> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key)
            .query_async(&mut redis.conn().await?)
            .await?;
        names.sort();
        Ok(names)
    }

    /// A page of at most `size` names after `after`, sorted, and whether more
    /// follow: the names `visible` returns for the registered qualified names
    /// (a caller sees its own tenant's, as it names them).
    pub async fn page(
        &self,
        redis: &Redis,
        visible: impl Fn(&str) -> Option<String>,
        after: Option<&str>,
        size: usize,
    ) -> Result<(Vec<String>, bool)> {
        let registered = self.all(redis).await?;
        let mut names: Vec<String> = registered.iter().filter_map(|q| visible(q)).collect();
        names.sort();
        Ok(crate::page::slice(names, String::as_str, after, size))
    }

    fn added(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.added.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
