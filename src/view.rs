//! The JSON shape of the API's answers for people's tools: what `redwire
//! ... --json` prints and what the console's `api/` returns. One place, so the
//! CLI and the console show a job, a queue or a stream the same way.
//!
//! Times are RFC 3339 with milliseconds ("" when unset), durations humantime
//! (`1m 30s`), bytes text when they are UTF-8 and hex otherwise, with an
//! `*_encoding` field saying which.

use std::time::Duration;

use serde_json::{Value, json};

use crate::proto::{
    ChannelActivity, DescribeResponse, Entry, HeldLock, JobInfo, JobState, MinuteCounts,
    StatsResponse, StreamInfoResponse, SubscriptionKind,
};

/// A job state's name as the CLI takes it (`waiting`, `dead`, ...).
pub fn state_name(state: i32) -> &'static str {
    match JobState::try_from(state) {
        Ok(JobState::Waiting) => "waiting",
        Ok(JobState::Delayed) => "delayed",
        Ok(JobState::Active) => "active",
        Ok(JobState::Completed) => "completed",
        Ok(JobState::Dead) => "dead",
        _ => "unknown",
    }
}

/// RFC 3339 for a protobuf timestamp ("" when unset).
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| {
        let secs = u64::try_from(t.seconds).ok()?;
        let nanos = u32::try_from(t.nanos).ok()?;
        let at = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
        Some(humantime::format_rfc3339_millis(at).to_string())
    })
    .unwrap_or_default()
}

/// A protobuf duration for people (`1m 30s`; "" when unset).
pub fn duration(d: Option<&prost_types::Duration>) -> String {
    crate::validate::duration("duration", d)
        .ok()
        .flatten()
        .map(|d| {
            let millis = Duration::from_millis(crate::time::millis(d));
            humantime::format_duration(millis).to_string()
        })
        .unwrap_or_default()
}

/// Bytes as text when they are UTF-8, else as hex, with which it is.
pub fn bytes(data: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(data) {
        Ok(text) => ("text", text.to_owned()),
        Err(_) => ("hex", data.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

/// A queue's stats.
pub fn stats(queue: &str, s: &StatsResponse) -> Value {
    json!({"queue": queue, "waiting": s.waiting, "delayed": s.delayed,
        "active": s.active, "completed": s.completed, "dead": s.dead,
        "paused": s.paused, "rate_limit_max": s.rate_limit_max,
        "rate_limit_window": duration(s.rate_limit_window.as_ref())})
}

/// One job, payload and result included.
pub fn job(job: &JobInfo) -> Value {
    let (payload_kind, payload) = bytes(&job.payload);
    let (result_kind, result) = bytes(&job.result);
    json!({
        "job_id": job.job_id,
        "state": state_name(job.state),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "group": job.group,
        "enqueue_time": time(job.enqueue_time.as_ref()),
        "due_time": time(job.due_time.as_ref()),
        "attributes": job.attributes,
        "errors": job.errors,
        "payload": payload,
        "payload_encoding": payload_kind,
        "result": result,
        "result_encoding": result_kind,
        "trace_id": job.trace_id,
    })
}

/// One minute of a queue's history.
pub fn minute(m: &MinuteCounts) -> Value {
    json!({"start_time": time(m.start_time.as_ref()), "enqueued": m.enqueued,
           "started": m.started, "completed": m.completed,
           "retried": m.retried, "dead_lettered": m.dead_lettered})
}

/// One stream entry, its field values as text or hex.
pub fn entry(entry: &Entry) -> Value {
    let fields: serde_json::Map<String, Value> = entry
        .fields
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(bytes(value).1)))
        .collect();
    json!({"stream": entry.stream, "id": entry.id, "fields": fields})
}

/// A stream's length, ends and consumer groups.
pub fn stream_info(stream: &str, info: &StreamInfoResponse) -> Value {
    let groups: Vec<Value> = info
        .groups
        .iter()
        .map(|g| {
            json!({"name": g.name, "pending": g.pending, "lag": g.lag,
                "last_delivered_id": g.last_delivered_id,
                "consumers": g.consumers.iter().map(|c| json!({
                    "name": c.name, "pending": c.pending,
                    "idle": duration(c.idle.as_ref())})).collect::<Vec<_>>()})
        })
        .collect();
    json!({"stream": stream, "length": info.length,
        "first_id": info.first_id, "last_id": info.last_id,
        "dead_letters": info.dead_letters, "groups": groups})
}

/// A lock's holder-independent state.
pub fn lock(resource: &str, lock: &DescribeResponse) -> Value {
    json!({"resource": resource, "held": lock.held, "ttl": duration(lock.ttl.as_ref()),
        "fencing_token": lock.fencing_token, "waiters": lock.waiters})
}

/// A lock from ListLocks.
pub fn held_lock(lock: &HeldLock) -> Value {
    json!({"resource": lock.resource, "ttl": duration(lock.ttl.as_ref()),
        "fencing_token": lock.fencing_token, "waiters": lock.waiters})
}

/// What a subscription name is, as people say it.
pub fn subscription_kind(kind: i32) -> &'static str {
    match SubscriptionKind::try_from(kind) {
        Ok(SubscriptionKind::Channel) => "channel",
        Ok(SubscriptionKind::Pattern) => "pattern",
        Ok(SubscriptionKind::ShardedChannel) => "sharded channel",
        Ok(SubscriptionKind::Topic) => "topic",
        Ok(SubscriptionKind::Unspecified) | Err(_) => "unknown",
    }
}

/// A subscription name from ListChannels.
pub fn channel(activity: &ChannelActivity) -> Value {
    json!({"name": activity.name, "kind": subscription_kind(activity.kind),
        "subscribers": activity.subscribers, "dropped": activity.dropped})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_or_hex() {
        assert_eq!(bytes(b"hello"), ("text", "hello".to_owned()));
        assert_eq!(bytes(&[0xff, 0x00]), ("hex", "ff00".to_owned()));
    }
}
