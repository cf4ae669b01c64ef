//! The job record stored in the queue's `jobs` hash: a msgpack map that Rust
//! writes at enqueue and the Lua scripts read and update (`cmsgpack`). Field names
//! are short because there is one record per job; `queue.lua` lists them.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// A job's record. Times are Redis server milliseconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// State: waiting, delayed, active, completed or dead.
    #[serde(rename = "st", default)]
    pub state: String,
    /// Deliveries so far.
    #[serde(rename = "att", default)]
    pub attempts: u32,
    /// Deliveries allowed.
    #[serde(rename = "max")]
    pub max_attempts: u32,
    /// 0..=1000, higher first.
    #[serde(rename = "pr", default)]
    pub priority: u32,
    /// Enqueue sequence number (FIFO order within a group).
    #[serde(rename = "seq", default)]
    pub seq: u64,
    /// Ordering group, or empty.
    #[serde(rename = "g", default)]
    pub group: String,
    /// 1 for exponential backoff, 0 for fixed.
    #[serde(rename = "bx", default)]
    pub backoff_exponential: u8,
    /// Base retry delay.
    #[serde(rename = "bd", default)]
    pub backoff_ms: u64,
    /// Longest retry delay (exponential).
    #[serde(rename = "bc", default)]
    pub backoff_cap_ms: u64,
    /// Share of each delay removed at random, per mille.
    #[serde(rename = "bj", default)]
    pub jitter_permille: u32,
    /// How long to keep the job after it completes; 0 removes it at once.
    #[serde(rename = "kc", default)]
    pub keep_completed_ms: u64,
    /// When it was enqueued.
    #[serde(rename = "et", default)]
    pub enqueued_ms: u64,
    /// Ready time (delayed), lease deadline (active) or removal time (completed).
    #[serde(rename = "due", default)]
    pub due_ms: u64,
    /// The current lease token (active only).
    #[serde(rename = "tok", default)]
    pub token: String,
    /// The last errors, oldest first.
    #[serde(rename = "errs", default, deserialize_with = "seq_or_empty_map")]
    pub errors: Vec<String>,
    /// User attributes.
    #[serde(rename = "at", default, deserialize_with = "map_or_empty_seq")]
    pub attributes: HashMap<String, String>,
}

impl JobRecord {
    /// Encodes the record as the msgpack map the scripts expect.
    pub fn encode(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self)
            .map_err(|e| Error::Internal(format!("encoding a job record: {e}")))
    }

    /// Decodes a record written by Rust or by a script.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        rmp_serde::from_slice(bytes)
            .map_err(|e| Error::Internal(format!("decoding a job record: {e}")))
    }
}

/// Lua cannot tell an empty map from an empty array, so `cmsgpack` writes `{}` as an
/// empty array; accept that for map fields.
fn map_or_empty_seq<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum MapOrSeq {
        Map(HashMap<String, String>),
        Seq(serde::de::IgnoredAny),
    }
    Ok(match MapOrSeq::deserialize(d)? {
        MapOrSeq::Map(map) => map,
        MapOrSeq::Seq(_) => HashMap::new(),
    })
}

/// The same confusion the other way: an empty Rust list may come back as a map.
fn seq_or_empty_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SeqOrMap {
        Seq(Vec<String>),
        Map(serde::de::IgnoredAny),
    }
    Ok(match SeqOrMap::deserialize(d)? {
        SeqOrMap::Seq(list) => list,
        SeqOrMap::Map(_) => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = JobRecord {
            state: "waiting".into(),
            max_attempts: 3,
            priority: 7,
            group: "user-1".into(),
            backoff_ms: 1000,
            errors: vec!["boom".into()],
            attributes: [("k".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        };
        let bytes = record.encode().expect("encode");
        assert_eq!(JobRecord::decode(&bytes).expect("decode"), record);
    }

    #[test]
    fn empty_tables_from_lua_decode() {
        // What cmsgpack writes for {st = "dead", max = 1, errs = {}, at = {}}.
        #[derive(Serialize)]
        struct LuaShape {
            st: &'static str,
            max: u32,
            errs: Vec<String>,
            at: Vec<String>,
        }
        let bytes = rmp_serde::to_vec_named(&LuaShape {
            st: "dead",
            max: 1,
            errs: vec![],
            at: vec![],
        })
        .expect("encode");
        let record = JobRecord::decode(&bytes).expect("decode");
        assert_eq!(record.state, "dead");
        assert!(record.attributes.is_empty() && record.errors.is_empty());
    }
}
