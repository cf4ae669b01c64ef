//! The job record stored in the queue's `jobs` hash: a msgpack map that Rust
//! writes at enqueue and the Lua scripts read and update (`cmsgpack`). Field names
//! are short because there is one record per job; `queue.lua` lists them, and a
//! unit test checks that every field a script uses is one of them.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::proto::TraceContext;

/// Highest job priority (0 is the lowest and the default).
pub(super) const MAX_PRIORITY: u32 = 1000;

/// Errors kept with a job (the most recent).
pub(super) const MAX_ERRORS_KEPT: usize = 10;

/// A job's state, as the queue scripts write it in a record's `st` and in their
/// replies (lowercase names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Ready for a consumer, or queued behind its ordering group.
    #[default]
    Waiting,
    /// Waiting for its delay or backoff.
    Delayed,
    /// Leased to a consumer.
    Active,
    /// Acked and kept for a while.
    Completed,
    /// Failed for good.
    Dead,
}

impl State {
    /// Every state, with the name the scripts use.
    pub const ALL: [(State, &'static str); 5] = [
        (State::Waiting, "waiting"),
        (State::Delayed, "delayed"),
        (State::Active, "active"),
        (State::Completed, "completed"),
        (State::Dead, "dead"),
    ];

    /// The state a script named; an unknown name is a bug, not a client mistake.
    pub fn parse(name: &str) -> Result<State> {
        Self::ALL
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(state, _)| *state)
            .ok_or_else(|| {
                Error::Internal(format!("a queue script wrote the unknown state {name:?}"))
            })
    }
}

/// A job's record. Times are Redis server milliseconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its state.
    #[serde(rename = "st", default)]
    pub state: State,
    /// Deliveries so far.
    #[serde(rename = "att", default)]
    pub attempts: u32,
    /// Deliveries allowed.
    #[serde(rename = "max")]
    pub max_attempts: u32,
    /// 0..=[`MAX_PRIORITY`], higher first.
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
    /// The producer's W3C `traceparent`; absent from the record when empty.
    #[serde(rename = "tp", default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
    /// The producer's W3C `tracestate`; absent from the record when empty.
    #[serde(rename = "ts", default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
}

impl JobRecord {
    /// The producer's trace context, if the job has one.
    pub fn trace_context(&self) -> Option<TraceContext> {
        (!self.traceparent.is_empty()).then(|| TraceContext {
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
        })
    }

    /// Stores the producer's trace context with the job.
    pub fn set_trace_context(&mut self, context: Option<TraceContext>) {
        let context = context.unwrap_or_default();
        self.traceparent = context.traceparent;
        self.tracestate = context.tracestate;
    }

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
    use crate::redis::keys::QueueMeta;

    /// Every queue script's source.
    const SCRIPTS: [&str; 10] = [
        include_str!("queue.lua"),
        include_str!("enqueue.lua"),
        include_str!("dequeue.lua"),
        include_str!("ack.lua"),
        include_str!("nack.lua"),
        include_str!("extend.lua"),
        include_str!("reap.lua"),
        include_str!("redrive.lua"),
        include_str!("purge.lua"),
        include_str!("delete.lua"),
    ];

    /// The identifiers that follow each `marker` in the scripts (`rec.` → `st`).
    fn names_after(marker: &str) -> Vec<&'static str> {
        let mut names = Vec::new();
        for script in SCRIPTS {
            for (at, _) in script.match_indices(marker) {
                let rest = &script[at + marker.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                names.push(&rest[..end]);
            }
        }
        names
    }

    /// Every record field a queue script reads or writes (`rec.st`) is one
    /// `JobRecord` stores under that name.
    #[test]
    fn every_record_field_the_scripts_use_is_a_record_field() {
        let encoded = JobRecord::default().encode().expect("encode");
        let stored: HashMap<String, serde::de::IgnoredAny> =
            rmp_serde::from_slice(&encoded).expect("a map");
        let used = names_after("rec.");
        assert!(used.len() > 30, "found only {} field uses", used.len());
        for name in used {
            assert!(
                stored.contains_key(name),
                "a script uses the record field {name:?}, which JobRecord does not have"
            );
        }
    }

    /// Every field of the queue's meta hash a script names (`META.paused`) is
    /// one `QueueMeta` declares, so the generated table has it.
    #[test]
    fn every_meta_field_the_scripts_use_is_declared() {
        let used = names_after("META.");
        assert!(used.len() >= 5, "found only {} meta field uses", used.len());
        for name in used {
            assert!(
                QueueMeta::all().any(|field| field == name),
                "a script uses META.{name}, which QueueMeta does not declare"
            );
        }
        assert!(QueueMeta::lua_table().contains("paused = 'paused'"));
    }

    /// Every state a queue script writes or compares is one `State` knows.
    #[test]
    fn every_state_the_scripts_name_is_known() {
        let mut seen = 0;
        for script in SCRIPTS {
            for marker in ["st = '", "st == '", "st ~= '", "state == '"] {
                for (at, _) in script.match_indices(marker) {
                    let rest = &script[at + marker.len()..];
                    let name = &rest[..rest.find('\'').expect("closing quote")];
                    assert!(
                        State::parse(name).is_ok(),
                        "a script names the state {name:?}"
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 10, "found only {seen} state names");
    }

    #[test]
    fn records_round_trip() {
        let record = JobRecord {
            state: State::Waiting,
            max_attempts: 3,
            priority: 7,
            group: "user-1".into(),
            backoff_ms: 1000,
            errors: vec!["boom".into()],
            attributes: [("k".to_owned(), "v".to_owned())].into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
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
        assert_eq!(record.state, State::Dead);
        assert!(record.attributes.is_empty() && record.errors.is_empty());
    }
}
