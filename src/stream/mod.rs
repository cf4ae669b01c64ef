//! `redwire.v1.Stream`: durable event logs on Redis Streams.
//!
//! Layout: `store.rs` (Redis calls), `readers.rs` (one shared `XREAD BLOCK` reader
//! per tailed stream per process), `group.rs` (ReadGroup consumer streams),
//! `claim.lua` (claiming with dead-lettering, exactly once), `append.lua` (batches
//! with explicit ids, all or nothing). Appends with Redis-chosen ids go through a
//! group commit per stream (`crate::group_commit`): concurrent callers share one
//! `MULTI`/`EXEC`.
//!
//! Keys: stream `orders` is `rw:s:{orders}`, its dead-letter stream (user name
//! `orders:dead`) is `rw:s:{orders}:dead`, and the groups' dead-letter policies are
//! in the hash `rw:s:{orders}:groups` — one cluster slot for all three. A
//! tenant's keys start `rw:<tenant>/s:`; handlers qualify names through the
//! call's `crate::auth::Scope` (see `crate::redis::keys`).

mod group;
mod readers;
mod store;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

pub use store::{
    ClaimWhat, Claimed, Fields, GroupState, NewEntries, StoredEntry, StreamState, StreamStore, Trim,
};

use self::readers::Readers;
use crate::auth::Scope;
use crate::error::{Error, Result};
use crate::group_commit::GroupCommit;
use crate::heartbeat;
use crate::page::{self, Page};
use crate::producer::{self, Replies};
use crate::proto::stream_server::Stream;
use crate::proto::*;
use crate::redis::keys::{self, DEAD_LETTER_SUFFIX};
use crate::streaming;
use crate::telemetry::traces::{self, Producer};
use crate::time::proto_duration;
use crate::validate::{self, Limits};

/// The entry fields that hold the producer's trace context (W3C `traceparent`
/// and `tracestate`): stored with the entry, handed out as `Entry.trace_context`
/// and never among `Entry.fields`. Field names starting with
/// [`RESERVED_FIELD_PREFIX`] are Redwire's.
const TRACEPARENT_FIELD: &str = "redwire.traceparent";
const TRACESTATE_FIELD: &str = "redwire.tracestate";
const RESERVED_FIELD_PREFIX: &str = "redwire.";

/// Entries per Range page when the request says 0.
const DEFAULT_RANGE: u32 = 100;
/// Unacked entries per ReadGroup consumer when the request says 0.
const DEFAULT_UNACKED: u32 = 10;
/// Entries read per catch-up call of a Tail.
const TAIL_BATCH: usize = 100;

/// The Stream service.
#[derive(Debug, Clone)]
pub struct StreamService {
    store: StreamStore,
    /// Appends whose ids Redis chooses, merged per stream across callers.
    appends: Arc<GroupCommit<StreamStore>>,
    readers: Arc<Readers>,
    limits: Limits,
    heartbeat: Duration,
    shutdown: CancellationToken,
}

impl StreamService {
    /// A Stream service; idle server streams get a heartbeat every `heartbeat`.
    pub fn new(
        store: StreamStore,
        limits: Limits,
        heartbeat: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            readers: Arc::new(Readers::new(store.clone(), shutdown.clone())),
            appends: Arc::new(GroupCommit::new(store.clone(), limits.max_batch)),
            store,
            limits,
            heartbeat,
            shutdown,
        }
    }

    fn fields(&self, field: &str, fields: &Fields) -> Result<()> {
        self.limits.entries(field, fields.len())?;
        for (name, value) in fields {
            self.limits.key(format_args!("{field}[{name:?}]"), name)?;
            if name.starts_with(RESERVED_FIELD_PREFIX) {
                return Err(Error::invalid(
                    format!("{field}[{name:?}]"),
                    format!("field names starting with {RESERVED_FIELD_PREFIX:?} are reserved"),
                ));
            }
            self.limits
                .value(format_args!("{field}[{name:?}]"), value)?;
        }
        Ok(())
    }
}

/// Consecutive AppendStream entries that can share one atomic `XADD` pipeline: same
/// stream, same trimming, ids chosen by Redis (an explicit id can be refused by
/// Redis, which must not fail its neighbours).
struct AppendRun {
    stream: String,
    trimming: Option<Trimming>,
    trim: Option<Trim>,
    entries: Vec<(String, Fields)>,
}

impl AppendRun {
    /// A run is either Redis-chosen ids only or one explicit-id entry alone, so its
    /// first entry tells which.
    fn takes(&self, stream: &str, req: &AppendRequest) -> bool {
        req.id.is_empty()
            && self.entries.first().is_none_or(|(id, _)| id.is_empty())
            && self.stream == stream
            && self.trimming == req.trim
    }
}

impl StreamService {
    /// Checks one Append request; returns the stream's qualified name and its
    /// trimming.
    fn check_append(&self, scope: &Scope, req: &AppendRequest) -> Result<(String, Option<Trim>)> {
        let stream = scope.name("stream", &req.stream)?.into_owned();
        self.fields("fields", &req.fields)?;
        if !req.id.is_empty() {
            entry_id("id", &req.id)?;
        }
        Ok((stream, trim("trim", req.trim.as_ref())?))
    }

    /// Appends an AppendStream batch in request order, one reply per entry: runs of
    /// entries that can share a pipeline go together, the others alone.
    async fn append_in_order(
        &self,
        scope: &Scope,
        producer: &Producer,
        batch: Vec<AppendRequest>,
    ) -> Vec<AppendStreamResponse> {
        let mut replies = Vec::with_capacity(batch.len());
        let mut run: Option<AppendRun> = None;
        for mut req in batch {
            let checked = self.check_append(scope, &req);
            // Replies keep request order: what is before this entry goes first.
            let joins =
                |run: &AppendRun| matches!(&checked, Ok((stream, _)) if run.takes(stream, &req));
            if run.as_ref().is_some_and(|run| !joins(run)) {
                self.append_run(run.take(), &mut replies).await;
            }
            let (stream, trim) = match checked {
                Ok(checked) => checked,
                Err(e) => {
                    replies.push(appended(Err(e)));
                    continue;
                }
            };
            // Entries of one stream call share its pipelines: each send span
            // marks its entry, the write is the run's.
            put_trace_context(&mut req.fields, &producer.send(&req.stream, 1, None));
            run.get_or_insert_with(|| AppendRun {
                stream,
                trimming: req.trim,
                trim,
                entries: Vec::new(),
            })
            .entries
            .push((req.id, req.fields));
        }
        self.append_run(run, &mut replies).await;
        replies
    }

    /// Appends entries to `stream`, all or nothing: with ids chosen by Redis
    /// through the stream's group commit (concurrent callers share a MULTI/EXEC),
    /// otherwise on their own.
    async fn append(
        &self,
        stream: &str,
        trim: Option<Trim>,
        entries: Vec<(String, Fields)>,
    ) -> Result<Vec<String>> {
        if entries.iter().any(|(id, _)| !id.is_empty()) {
            return self.store.append(stream, &entries, trim.as_ref()).await;
        }
        let fields = entries.into_iter().map(|(_, fields)| fields).collect();
        self.appends
            .submit(stream, NewEntries { trim, fields })
            .await
    }

    async fn append_run(&self, run: Option<AppendRun>, replies: &mut Vec<AppendStreamResponse>) {
        let Some(run) = run else { return };
        let count = run.entries.len();
        match self.append(&run.stream, run.trim, run.entries).await {
            // Exactly one reply per entry, or every later reply would answer the wrong one.
            Ok(ids) if ids.len() == count => {
                replies.extend(ids.into_iter().map(|id| appended(Ok(id))));
            }
            Ok(ids) => {
                let e = Error::Internal(format!(
                    "redis returned {} ids for {count} entries",
                    ids.len()
                ));
                replies.extend((0..count).map(|_| appended(Err(e.clone()))));
            }
            Err(e) => replies.extend((0..count).map(|_| appended(Err(e.clone())))),
        }
    }
}

/// One AppendStream reply.
fn appended(result: Result<String>) -> AppendStreamResponse {
    AppendStreamResponse {
        result: Some(match result {
            Ok(id) => append_stream_response::Result::Appended(AppendResponse { id }),
            Err(e) => append_stream_response::Result::Failed(producer::failure(e)),
        }),
    }
}

/// A stream entry id: `<ms>` or `<ms>-<seq>`.
fn entry_id(field: &str, id: &str) -> Result<()> {
    let valid = match id.split_once('-') {
        Some((ms, seq)) => is_number(ms) && is_number(seq),
        None => is_number(id),
    };
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{id:?} is not a stream id (<ms>-<seq>)"),
        ))
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A range bound: empty or the given open end, or an id, optionally "(" exclusive.
fn range_bound(field: &str, value: &str, open: &'static str) -> Result<String> {
    match value {
        "" => Ok(open.to_owned()),
        "-" | "+" => Ok(value.to_owned()),
        _ => {
            entry_id(field, value.strip_prefix('(').unwrap_or(value))?;
            Ok(value.to_owned())
        }
    }
}

fn trim(field: &str, trimming: Option<&Trimming>) -> Result<Option<Trim>> {
    let Some(t) = trimming else { return Ok(None) };
    match &t.keep {
        Some(trimming::Keep::MaxLength(n)) => Ok(Some(Trim::MaxLength(*n, t.exact))),
        Some(trimming::Keep::MinId(id)) => {
            entry_id(&format!("{field}.min_id"), id)?;
            Ok(Some(Trim::MinId(id.clone(), t.exact)))
        }
        None => Err(Error::invalid(field, "set max_length or min_id")),
    }
}

/// A stored entry of the stream with qualified name `stream` as the proto's
/// Entry (which names the stream as its tenant does).
fn to_entry(stream: &str, mut e: StoredEntry) -> Entry {
    let trace_context = take_trace_context(&mut e.fields);
    Entry {
        stream: keys::user_name(stream).to_owned(),
        id: e.id,
        fields: e.fields,
        deliveries: e.deliveries,
        trace_context,
    }
}

/// Stores the producer's trace context `sending` in an entry's `fields`.
fn put_trace_context(fields: &mut Fields, sending: &traces::Sending) {
    if let Some(context) = &sending.context {
        fields.insert(
            TRACEPARENT_FIELD.to_owned(),
            context.traceparent.clone().into(),
        );
        if !context.tracestate.is_empty() {
            fields.insert(
                TRACESTATE_FIELD.to_owned(),
                context.tracestate.clone().into(),
            );
        }
    }
}

/// Takes the producer's trace context out of a stored entry's fields.
fn take_trace_context(fields: &mut Fields) -> Option<TraceContext> {
    let traceparent = fields.remove(TRACEPARENT_FIELD)?;
    let tracestate = fields.remove(TRACESTATE_FIELD).unwrap_or_default();
    Some(TraceContext {
        traceparent: String::from_utf8_lossy(&traceparent).into_owned(),
        tracestate: String::from_utf8_lossy(&tracestate).into_owned(),
    })
}

/// The stream type of Tail: the tail task's channel, with heartbeats.
pub type TailStream = heartbeat::Heartbeats<
    ReceiverStream<std::result::Result<TailResponse, Status>>,
    fn() -> std::result::Result<TailResponse, Status>,
>;
/// The stream type of ReadGroup: the group consumer's channel, with heartbeats.
pub type ReadGroupStream = heartbeat::Heartbeats<
    ReceiverStream<std::result::Result<ReadGroupResponse, Status>>,
    fn() -> std::result::Result<ReadGroupResponse, Status>,
>;

fn tail_heartbeat() -> std::result::Result<TailResponse, Status> {
    Ok(TailResponse {
        event: Some(tail_response::Event::Heartbeat(heartbeat::now())),
    })
}

fn read_group_heartbeat() -> std::result::Result<ReadGroupResponse, Status> {
    Ok(ReadGroupResponse {
        event: Some(read_group_response::Event::Heartbeat(heartbeat::now())),
    })
}

#[tonic::async_trait]
impl Stream for StreamService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let scope = Scope::of(&request);
        let producer = Producer::of(&request);
        let mut req = request.into_inner();
        let (stream, trim) = self.check_append(&scope, &req)?;
        let send = producer.send(&req.stream, 1, None);
        put_trace_context(&mut req.fields, &send);
        let mut ids = self
            .append(&stream, trim, vec![(req.id, req.fields)])
            .instrument(send.span)
            .await?;
        Ok(Response::new(AppendResponse {
            id: ids.pop().unwrap_or_default(),
        }))
    }

    type AppendStreamStream = Replies<AppendStreamResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let service = self.clone();
        let scope = Scope::of(&request);
        let trace = Producer::of(&request);
        let replies = producer::serve(
            request.into_inner(),
            self.limits.max_batch,
            self.shutdown.clone(),
            move |batch: Vec<AppendStreamRequest>| {
                let (service, scope, trace) = (service.clone(), scope.clone(), trace.clone());
                let batch = batch.into_iter().map(append_request).collect();
                async move { service.append_in_order(&scope, &trace, batch).await }
            },
        );
        Ok(Response::new(replies))
    }

    async fn append_batch(
        &self,
        request: Request<AppendBatchRequest>,
    ) -> Result<Response<AppendBatchResponse>, Status> {
        let scope = Scope::of(&request);
        let producer = Producer::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        self.limits.batch("entries", &req.entries)?;
        for (i, entry) in req.entries.iter().enumerate() {
            self.fields(&format!("entries[{i}].fields"), &entry.fields)?;
            if !entry.id.is_empty() {
                entry_id(&format!("entries[{i}].id"), &entry.id)?;
            }
        }
        let trim = trim("trim", req.trim.as_ref())?;
        let send = producer.send(&req.stream, req.entries.len(), None);
        let entries = req
            .entries
            .into_iter()
            .map(|mut e| {
                put_trace_context(&mut e.fields, &send);
                (e.id, e.fields)
            })
            .collect();
        let ids = self
            .append(&stream, trim, entries)
            .instrument(send.span)
            .await?;
        Ok(Response::new(AppendBatchResponse { ids }))
    }

    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        let (low, high) = if req.reverse { ("+", "-") } else { ("-", "+") };
        let start = range_bound("start", &req.start, low)?;
        let end = range_bound("end", &req.end, high)?;
        let count = self.limits.count("count", req.count, DEFAULT_RANGE)?;
        let entries = self
            .store
            .range(&stream, &start, &end, req.reverse, count)
            .await?;
        Ok(Response::new(RangeResponse {
            entries: entries.into_iter().map(|e| to_entry(&stream, e)).collect(),
        }))
    }

    type TailStream = TailStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        self.limits.batch("streams", &req.streams)?;
        let heartbeat = heartbeat::interval(
            "heartbeat_interval",
            req.heartbeat_interval.as_ref(),
            self.heartbeat,
        )?;
        let mut positions = Vec::with_capacity(req.streams.len());
        for (i, p) in req.streams.iter().enumerate() {
            let stream = scope.name(format_args!("streams[{i}].stream"), &p.stream)?;
            let after = match p.after.as_str() {
                "" | "$" => self
                    .store
                    .last_id(&stream)
                    .await?
                    .unwrap_or_else(|| "0-0".to_owned()),
                "0" => "0-0".to_owned(),
                id => {
                    entry_id(&format!("streams[{i}].after"), id)?;
                    id.to_owned()
                }
            };
            positions.push((stream.into_owned(), after));
        }
        let signals: Vec<_> = positions
            .iter()
            .map(|(s, _)| self.readers.signal(s))
            .collect();
        let (tx, rx) = mpsc::channel(TAIL_BATCH);
        let started = TailStarted {
            streams: positions
                .iter()
                .map(|(stream, after)| TailPosition {
                    stream: keys::user_name(stream).to_owned(),
                    after: after.clone(),
                })
                .collect(),
        };
        // The channel is new and has room: the first event is always `started`.
        let _ = tx.try_send(Ok(TailResponse {
            event: Some(tail_response::Event::Started(started)),
        }));
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let trace = traces::Consumer::current();
        tokio::spawn(async move {
            let ending = tail_loop(store, positions, signals, &tx, &trace, shutdown).await;
            streaming::finish(&tx, ending).await;
        });
        Ok(Response::new(heartbeat::every(
            heartbeat,
            ReceiverStream::new(rx),
            tail_heartbeat,
        )))
    }

    async fn create_group(
        &self,
        request: Request<CreateGroupRequest>,
    ) -> Result<Response<CreateGroupResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        validate::name("group", &req.group)?;
        let start = match req.start.as_str() {
            "" | "$" => "$".to_owned(),
            "0" => "0".to_owned(),
            id => {
                entry_id("start", id)?;
                id.to_owned()
            }
        };
        let created = self
            .store
            .create_group(&stream, &req.group, &start, req.max_deliveries)
            .await?;
        Ok(Response::new(CreateGroupResponse { created }))
    }

    async fn destroy_group(
        &self,
        request: Request<DestroyGroupRequest>,
    ) -> Result<Response<DestroyGroupResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        validate::name("group", &req.group)?;
        let destroyed = self.store.destroy_group(&stream, &req.group).await?;
        Ok(Response::new(DestroyGroupResponse { destroyed }))
    }

    async fn delete_consumer(
        &self,
        request: Request<DeleteConsumerRequest>,
    ) -> Result<Response<DeleteConsumerResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        validate::name("group", &req.group)?;
        validate::name("consumer", &req.consumer)?;
        let pending = self
            .store
            .delete_consumer(&stream, &req.group, &req.consumer)
            .await?;
        Ok(Response::new(DeleteConsumerResponse { pending }))
    }

    type ReadGroupStream = ReadGroupStream;

    async fn read_group(
        &self,
        request: Request<Streaming<ReadGroupRequest>>,
    ) -> Result<Response<Self::ReadGroupStream>, Status> {
        let scope = Scope::of(&request);
        let mut inbound = request.into_inner();
        let open = match inbound.message().await? {
            Some(ReadGroupRequest {
                message: Some(read_group_request::Message::Open(open)),
            }) => open,
            _ => return Err(Error::invalid("message", "the first message must be open").into()),
        };
        let stream = scope.name("open.stream", &open.stream)?.into_owned();
        validate::name("open.group", &open.group)?;
        let ephemeral = open.consumer.is_empty();
        let consumer = if ephemeral {
            format!("rw-{}", uuid::Uuid::now_v7())
        } else {
            validate::name("open.consumer", &open.consumer)?;
            open.consumer
        };
        let max_unacked =
            self.limits
                .count("open.max_unacked", open.max_unacked, DEFAULT_UNACKED)?;
        let claim_idle = validate::ttl("open.claim_idle", open.claim_idle.as_ref())?;
        let heartbeat = heartbeat::interval(
            "open.heartbeat_interval",
            open.heartbeat_interval.as_ref(),
            self.heartbeat,
        )?;
        // Fail fast with NOT_FOUND when the group does not exist.
        self.store.pending_summary(&stream, &open.group).await?;
        let (tx, rx) = mpsc::channel(max_unacked + 16);
        let consumer = group::GroupConsumer {
            store: self.store.clone(),
            signal: self.readers.signal(&stream),
            stream,
            group: open.group,
            consumer,
            ephemeral,
            max_unacked,
            claim_idle,
            tx,
            trace: traces::Consumer::current(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(consumer.run(inbound));
        Ok(Response::new(heartbeat::every(
            heartbeat,
            ReceiverStream::new(rx),
            read_group_heartbeat,
        )))
    }

    async fn ack(
        &self,
        request: Request<StreamAckRequest>,
    ) -> Result<Response<StreamAckResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        validate::name("group", &req.group)?;
        self.limits.batch("ids", &req.ids)?;
        for (i, id) in req.ids.iter().enumerate() {
            entry_id(&format!("ids[{i}]"), id)?;
        }
        let acked = self.store.ack(&stream, &req.group, &req.ids).await?;
        Ok(Response::new(StreamAckResponse { acked }))
    }

    async fn pending(
        &self,
        request: Request<PendingRequest>,
    ) -> Result<Response<PendingResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        validate::name("group", &req.group)?;
        if !req.consumer.is_empty() {
            validate::name("consumer", &req.consumer)?;
        }
        let summary = self.store.pending_summary(&stream, &req.group).await?;
        let entries = if req.detail > 0 {
            let count = self.limits.count("detail", req.detail, 1)?;
            let min_idle =
                validate::duration("min_idle", req.min_idle.as_ref())?.unwrap_or_default();
            let consumer = (!req.consumer.is_empty()).then_some(req.consumer.as_str());
            self.store
                .pending_detail(&stream, &req.group, min_idle, ("-", "+"), count, consumer)
                .await?
        } else {
            Vec::new()
        };
        Ok(Response::new(PendingResponse {
            count: summary.count,
            first_id: summary.first_id,
            last_id: summary.last_id,
            consumers: summary
                .consumers
                .into_iter()
                .map(|(consumer, pending)| ConsumerPending { consumer, pending })
                .collect(),
            entries: entries
                .into_iter()
                .map(|p| PendingEntry {
                    id: p.id,
                    consumer: p.consumer,
                    idle: Some(proto_duration(p.idle)),
                    deliveries: p.deliveries,
                })
                .collect(),
        }))
    }

    async fn claim(
        &self,
        request: Request<ClaimRequest>,
    ) -> Result<Response<ClaimResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        validate::name("group", &req.group)?;
        validate::name("consumer", &req.consumer)?;
        self.limits.batch("ids", &req.ids)?;
        for (i, id) in req.ids.iter().enumerate() {
            entry_id(&format!("ids[{i}]"), id)?;
        }
        let min_idle = validate::duration("min_idle", req.min_idle.as_ref())?.unwrap_or_default();
        let claimed = self
            .store
            .claim(
                &stream,
                &req.group,
                &req.consumer,
                min_idle,
                ClaimWhat::Ids(&req.ids),
            )
            .await?;
        Ok(Response::new(ClaimResponse {
            entries: claimed
                .entries
                .into_iter()
                .map(|e| to_entry(&stream, e))
                .collect(),
            dead_lettered: claimed.dead_lettered,
        }))
    }

    async fn auto_claim(
        &self,
        request: Request<AutoClaimRequest>,
    ) -> Result<Response<AutoClaimResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        validate::name("group", &req.group)?;
        validate::name("consumer", &req.consumer)?;
        let min_idle = validate::duration("min_idle", req.min_idle.as_ref())?.unwrap_or_default();
        let count = self.limits.count("count", req.count, DEFAULT_RANGE)?;
        let start = match req.start.as_str() {
            "" | "0-0" | "-" => "-".to_owned(),
            other => range_bound("start", other, "-")?,
        };
        let claimed = self
            .store
            .claim(
                &stream,
                &req.group,
                &req.consumer,
                min_idle,
                ClaimWhat::Scan {
                    start: &start,
                    count,
                },
            )
            .await?;
        Ok(Response::new(AutoClaimResponse {
            entries: claimed
                .entries
                .into_iter()
                .map(|e| to_entry(&stream, e))
                .collect(),
            dead_lettered: claimed.dead_lettered,
            next_start: claimed.next_start,
        }))
    }

    async fn list_streams(
        &self,
        request: Request<ListStreamsRequest>,
    ) -> Result<Response<ListStreamsResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let page = Page::of(&self.limits, req.page_size, &req.page_token)?;
        let (streams, more) = self
            .store
            .stream_page(
                |qualified| scope.listed(qualified),
                page.after.as_deref(),
                page.size,
            )
            .await?;
        Ok(Response::new(ListStreamsResponse {
            next_page_token: page::next_after(&streams, more),
            streams,
        }))
    }

    async fn info(
        &self,
        request: Request<StreamInfoRequest>,
    ) -> Result<Response<StreamInfoResponse>, Status> {
        let scope = Scope::of(&request);
        let name = request.into_inner().stream;
        let stream = scope.name("stream", &name)?;
        let state = self.store.info(&stream).await?;
        Ok(Response::new(StreamInfoResponse {
            length: state.length,
            first_id: state.first_id,
            last_id: state.last_id,
            groups: state
                .groups
                .into_iter()
                .map(|g| GroupInfo {
                    name: g.name,
                    pending: g.pending,
                    last_delivered_id: g.last_delivered_id,
                    lag: g.lag,
                    consumers: g
                        .consumers
                        .into_iter()
                        .map(|(name, pending, idle)| ConsumerInfo {
                            name,
                            pending,
                            idle: Some(proto_duration(Duration::from_millis(idle))),
                        })
                        .collect(),
                    max_deliveries: g.max_deliveries,
                })
                .collect(),
            dead_letters: state.dead_letters,
            dead_letter_stream: format!(
                "{}{DEAD_LETTER_SUFFIX}",
                name.strip_suffix(DEAD_LETTER_SUFFIX).unwrap_or(&name)
            ),
        }))
    }

    async fn trim(&self, request: Request<TrimRequest>) -> Result<Response<TrimResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let stream = scope.name("stream", &req.stream)?;
        let trim = validate::required("trim", trim("trim", req.trim.as_ref())?)?;
        let removed = self.store.trim(&stream, &trim).await?;
        Ok(Response::new(TrimResponse { removed }))
    }
}

/// Sends entries of every stream after its position, waiting on the shared readers
/// in between. Returns a status to end with, or None when the client left.
async fn tail_loop(
    store: StreamStore,
    mut positions: Vec<(String, String)>,
    signals: Vec<Arc<readers::StreamSignal>>,
    tx: &mpsc::Sender<std::result::Result<TailResponse, Status>>,
    trace: &traces::Consumer,
    shutdown: CancellationToken,
) -> Option<Status> {
    loop {
        let mut woken: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            signals.iter().map(|s| Box::pin(s.notified())).collect();
        for w in &mut woken {
            w.as_mut().enable();
        }
        let mut sent_any = false;
        for (stream, after) in &mut positions {
            let entries = match store.read_after(stream, after, TAIL_BATCH).await {
                Ok(entries) => entries,
                Err(e) if e.is_transient() => continue,
                Err(e) => return Some(e.into()),
            };
            for entry in entries {
                *after = entry.id.clone();
                let entry = to_entry(stream, entry);
                trace.received(&entry.stream, &entry.id, entry.trace_context.as_ref());
                let event = TailResponse {
                    event: Some(tail_response::Event::Entry(entry)),
                };
                if tx.send(Ok(event)).await.is_err() {
                    return None;
                }
                sent_any = true;
            }
        }
        if sent_any {
            continue;
        }
        tokio::select! {
            _ = futures::future::select_all(woken) => {}
            () = tx.closed() => return None,
            () = shutdown.cancelled() => return Some(Error::ShuttingDown.into()),
        }
    }
}

/// One AppendStream message as the append it asks for (every field named, so a
/// new field cannot be forgotten here).
fn append_request(message: AppendStreamRequest) -> AppendRequest {
    let AppendStreamRequest {
        stream,
        fields,
        id,
        trim,
    } = message;
    AppendRequest {
        stream,
        fields,
        id,
        trim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_bounds_are_checked() {
        assert!(entry_id("id", "1700000000000-0").is_ok());
        assert!(entry_id("id", "5").is_ok());
        assert!(entry_id("id", "abc").is_err());
        assert!(entry_id("id", "1-").is_err());
        assert_eq!(range_bound("start", "", "-").expect("open"), "-");
        assert_eq!(
            range_bound("start", "(5-1", "-").expect("exclusive"),
            "(5-1"
        );
        assert!(range_bound("start", "(x", "-").is_err());
    }
}
