//! The operator console: a web page on the admin listener at `/console/`, its
//! assets compiled into the binary (it works offline), and the JSON api under
//! `/console/api/` that the page reads.
//!
//! The api is a thin layer over the gRPC services: each endpoint calls the same
//! rpcs a client would, in process ([`InProcess`]) through the same tower
//! layers (auth, quotas, request log, metrics), passing the request's
//! `authorization` header on as metadata. So a token sees and may do in the
//! console exactly what it may over gRPC: a read-only grant sees everything
//! and every action of it is refused `PERMISSION_DENIED`. The answers are the
//! [`crate::view`] shapes the CLI prints with `--json`.
//!
//! Every link and fetch in the page is relative, so the console works behind a
//! reverse proxy that mounts it under any path prefix. Actions are `POST`s with
//! a JSON body: a cross-site page cannot send those without a CORS preflight,
//! which the listener never grants.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::future::try_join_all;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tower::util::BoxCloneSyncService;

use crate::proto::lock_client::LockClient;
use crate::proto::pub_sub_client::PubSubClient;
use crate::proto::queue_client::QueueClient;
use crate::proto::stream_client::StreamClient;
use crate::proto::*;
use crate::view;

/// The gRPC services, with every layer the network listener applies, called
/// in process: no socket, no TLS, no second copy of auth.
pub type InProcess = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

/// How many queues, streams, channels and locks one overview page shows.
const OVERVIEW_PAGE: u32 = 20;
/// Channels or locks per page of their own pages.
const LIST_PAGE: u32 = 50;
/// Jobs per page of a queue's job list.
const JOBS_PAGE: u32 = 25;
/// How many dead letters the grouping reads at most; the page says when a
/// queue has more, so the cap is never silent.
pub const DEAD_GROUPING_CAP: usize = 2_000;
/// Dead letters per ListDead call while grouping (payloads come along).
const DEAD_SCAN_PAGE: u32 = 100;
/// The newest entries the stream page shows.
const STREAM_ENTRIES: u32 = 20;
/// The largest action body the api reads.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The deadline of each rpc the api makes.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The page, its script and its style, in the binary.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

/// What the console serves from.
#[derive(Debug, Clone)]
pub struct Console {
    grpc: InProcess,
    /// Whether calls need a token (`--auth-file`), so the page asks for one.
    auth: bool,
    /// The most job ids one Redrive takes (`--max-batch`).
    max_batch: usize,
}

/// Why an api call failed: the rpc's status, shown to the person as is.
struct Failure(tonic::Status);

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self(status)
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure(tonic::Status::invalid_argument(message))
}

type Reply = Response<Full<Bytes>>;

impl Console {
    /// A console over `grpc`; `auth` says whether calls need a token.
    pub fn new(grpc: InProcess, auth: bool, max_batch: usize) -> Self {
        Self {
            grpc,
            auth,
            max_batch,
        }
    }

    /// Answers `request`, whose path starts with `/console`.
    pub async fn respond(&self, request: Request<Incoming>) -> Reply {
        let path = request.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/console") else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        if rest.is_empty() {
            // Relative, so a path prefix in front of /console is kept.
            let mut reply = text(StatusCode::PERMANENT_REDIRECT, "");
            reply
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("console/"));
            return reply;
        }
        let rest = rest.trim_start_matches('/');
        if let Some(api) = rest.strip_prefix("api/") {
            let api = api.to_owned();
            return self.api(request, &api).await;
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        }
        match ASSETS.iter().find(|(name, _, _)| *name == rest) {
            Some((_, content_type, body)) => asset(content_type, body),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn api(&self, request: Request<Incoming>, path: &str) -> Reply {
        let segments: Vec<String> = path
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let query: HashMap<String, String> = request
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let token = request.headers().get(header::AUTHORIZATION).cloned();
        let calls = Calls {
            grpc: &self.grpc,
            token,
        };
        let outcome = if request.method() == Method::POST {
            match action_body(request).await {
                Ok(body) => self.act(&calls, &segments, &body).await,
                Err(failure) => Err(failure),
            }
        } else if request.method() == Method::GET {
            self.read(&calls, &segments, &query).await
        } else {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET reads, POST acts\n");
        };
        match outcome {
            Ok(value) => json_reply(StatusCode::OK, &value),
            Err(Failure(status)) => json_reply(
                http_status(status.code()),
                &json!({"code": crate::error::code_name(status.code()),
                        "message": status.message()}),
            ),
        }
    }

    /// The GET endpoints: what the pages show.
    async fn read(
        &self,
        calls: &Calls<'_>,
        segments: &[String],
        query: &HashMap<String, String>,
    ) -> Result<Value, Failure> {
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        let arg = |name: &str| query.get(name).cloned().unwrap_or_default();
        match parts.as_slice() {
            ["session"] => Ok(json!({"auth": self.auth})),
            ["overview"] => overview(calls, &arg).await,
            ["channels"] => channels(calls, LIST_PAGE, arg("page_token")).await,
            ["locks"] => locks(calls, LIST_PAGE, arg("page_token")).await,
            ["queues", queue] => queue_page(calls, queue).await,
            ["queues", queue, "jobs"] => {
                let state = job_state(&arg("state"))?;
                let page = calls
                    .queue()
                    .list_jobs(calls.request(ListJobsRequest {
                        queue: (*queue).to_owned(),
                        state: state.into(),
                        page_size: JOBS_PAGE,
                        page_token: arg("page_token"),
                    }))
                    .await?
                    .into_inner();
                Ok(
                    json!({"jobs": page.jobs.iter().map(view::job).collect::<Vec<_>>(),
                    "total": page.total, "next_page_token": page.next_page_token}),
                )
            }
            ["queues", queue, "jobs", job_id] => {
                let job = calls
                    .queue()
                    .get_job(calls.request(GetJobRequest {
                        queue: (*queue).to_owned(),
                        job_id: (*job_id).to_owned(),
                    }))
                    .await?
                    .into_inner()
                    .job
                    .unwrap_or_default();
                Ok(view::job(&job))
            }
            ["queues", queue, "dead-groups"] => dead_groups(calls, queue).await,
            ["streams", stream] => stream_page(calls, stream).await,
            ["locks", resource] => {
                let lock = calls
                    .lock()
                    .describe(calls.request(DescribeRequest {
                        resource: (*resource).to_owned(),
                    }))
                    .await?
                    .into_inner();
                Ok(view::lock(resource, &lock))
            }
            _ => Err(Failure(tonic::Status::not_found(format!(
                "no console api at {:?}",
                segments.join("/")
            )))),
        }
    }

    /// The POST endpoints: what the buttons do.
    async fn act(
        &self,
        calls: &Calls<'_>,
        segments: &[String],
        body: &Value,
    ) -> Result<Value, Failure> {
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        match parts.as_slice() {
            ["queues", queue, "pause"] => {
                let request = calls.request(PauseRequest {
                    queue: (*queue).to_owned(),
                });
                calls.queue().pause(request).await?;
                Ok(json!({"paused": true}))
            }
            ["queues", queue, "resume"] => {
                let request = calls.request(ResumeRequest {
                    queue: (*queue).to_owned(),
                });
                calls.queue().resume(request).await?;
                Ok(json!({"paused": false}))
            }
            ["queues", queue, "redrive"] => self.redrive(calls, queue, body).await,
            ["queues", queue, "purge-dead"] => {
                // The typed confirmation: the page makes the person type the
                // queue's name, and the api checks it, so no stray call purges.
                if body.get("confirm").and_then(Value::as_str) != Some(*queue) {
                    return Err(invalid(format!(
                        "confirm: type the queue's name ({queue:?}) to purge its dead letters"
                    )));
                }
                let purged = calls
                    .queue()
                    .purge_dead(calls.request(PurgeDeadRequest {
                        queue: (*queue).to_owned(),
                    }))
                    .await?
                    .into_inner()
                    .purged;
                Ok(json!({ "purged": purged }))
            }
            ["queues", queue, "jobs", job_id, "delete"] => {
                let state = calls
                    .queue()
                    .delete_job(calls.request(DeleteJobRequest {
                        queue: (*queue).to_owned(),
                        job_id: (*job_id).to_owned(),
                    }))
                    .await?
                    .into_inner()
                    .state;
                Ok(json!({"deleted": job_id, "state": view::state_name(state)}))
            }
            ["streams", stream, "claim"] => {
                let field = |name: &str| {
                    body.get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(format!("{name}: required")))
                };
                let idle_seconds = body
                    .get("min_idle_seconds")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid("min_idle_seconds: a whole number of seconds"))?;
                let claimed = calls
                    .stream()
                    .auto_claim(calls.request(AutoClaimRequest {
                        stream: (*stream).to_owned(),
                        group: field("group")?,
                        consumer: field("consumer")?,
                        min_idle: Some(prost_types::Duration {
                            seconds: i64::try_from(idle_seconds).unwrap_or(i64::MAX),
                            nanos: 0,
                        }),
                        start: String::new(),
                        count: 0,
                    }))
                    .await?
                    .into_inner();
                Ok(json!({"claimed": claimed.entries.len(),
                    "dead_lettered": claimed.dead_lettered.len(),
                    "next_start": claimed.next_start}))
            }
            _ => Err(Failure(tonic::Status::not_found(format!(
                "no console action at {:?}",
                segments.join("/")
            )))),
        }
    }

    /// Redrives `job_ids` (in batches Redrive takes), the dead letters whose
    /// last error is `error`, or with `all` every dead letter.
    async fn redrive(
        &self,
        calls: &Calls<'_>,
        queue: &str,
        body: &Value,
    ) -> Result<Value, Failure> {
        let ids: Vec<String> = if body.get("all").and_then(Value::as_bool) == Some(true) {
            let request = calls.request(RedriveRequest {
                queue: queue.to_owned(),
                job_ids: Vec::new(),
            });
            let redriven = calls.queue().redrive(request).await?.into_inner().redriven;
            return Ok(json!({ "redriven": redriven }));
        } else if let Some(error) = body.get("error").and_then(Value::as_str) {
            let scan = scan_dead(calls, queue).await?;
            scan.jobs
                .into_iter()
                .filter(|job| last_error(job) == error)
                .map(|job| job.job_id)
                .collect()
        } else if let Some(ids) = body.get("job_ids").and_then(Value::as_array) {
            ids.iter()
                .map(|id| {
                    id.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid("job_ids: a list of job ids"))
                })
                .collect::<Result<_, _>>()?
        } else {
            return Err(invalid(
                "give job_ids (a list), error (a group's last error) or all: true",
            ));
        };
        if ids.is_empty() {
            return Err(invalid("job_ids: none given (or the group is gone)"));
        }
        let mut redriven = 0;
        for batch in ids.chunks(self.max_batch.max(1)) {
            let request = calls.request(RedriveRequest {
                queue: queue.to_owned(),
                job_ids: batch.to_vec(),
            });
            redriven += calls.queue().redrive(request).await?.into_inner().redriven;
        }
        Ok(json!({ "redriven": redriven }))
    }
}

/// The rpcs of one api request, made with its token.
struct Calls<'a> {
    grpc: &'a InProcess,
    token: Option<HeaderValue>,
}

impl Calls<'_> {
    fn queue(&self) -> QueueClient<InProcess> {
        QueueClient::new(self.grpc.clone()).max_decoding_message_size(usize::MAX)
    }

    fn stream(&self) -> StreamClient<InProcess> {
        StreamClient::new(self.grpc.clone()).max_decoding_message_size(usize::MAX)
    }

    fn lock(&self) -> LockClient<InProcess> {
        LockClient::new(self.grpc.clone())
    }

    fn pubsub(&self) -> PubSubClient<InProcess> {
        PubSubClient::new(self.grpc.clone())
    }

    /// `message` as a call carrying the person's token and a deadline.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        if let Some(token) = &self.token
            && let Ok(value) = MetadataValue::try_from(token.as_bytes())
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

/// Every queue and stream of one page, with headline numbers and the last
/// hour's throughput per queue.
async fn overview(calls: &Calls<'_>, arg: &impl Fn(&str) -> String) -> Result<Value, Failure> {
    let (queues, streams, channels, locks) = tokio::try_join!(
        queue_rows(calls, arg("queues_after")),
        stream_rows(calls, arg("streams_after")),
        channels(calls, OVERVIEW_PAGE, arg("channels_after")),
        locks(calls, OVERVIEW_PAGE, arg("locks_after")),
    )?;
    Ok(json!({
        "queues": queues["queues"], "queues_next": queues["next_page_token"],
        "streams": streams["streams"], "streams_next": streams["next_page_token"],
        "channels": channels["channels"], "channels_next": channels["next_page_token"],
        "locks": locks["locks"], "locks_next": locks["next_page_token"],
    }))
}

/// A page of queues with their counts and the last hour's throughput.
async fn queue_rows(calls: &Calls<'_>, page_token: String) -> Result<Value, Failure> {
    let page = calls
        .queue()
        .list_queues(calls.request(ListQueuesRequest {
            page_size: OVERVIEW_PAGE,
            page_token,
        }))
        .await?
        .into_inner();
    let rows = try_join_all(page.queues.iter().map(|queue| async move {
        let (mut stats_client, mut history_client) = (calls.queue(), calls.queue());
        let stats = stats_client.stats(calls.request(StatsRequest {
            queue: queue.clone(),
        }));
        let history = history_client.get_history(calls.request(GetHistoryRequest {
            queue: queue.clone(),
        }));
        let (stats, history) = tokio::try_join!(stats, history)?;
        let minutes = history.into_inner().minutes;
        let mut row = view::stats(queue, &stats.into_inner());
        row["completed_per_minute"] = minutes.iter().map(|m| m.completed).collect();
        row["enqueued_per_minute"] = minutes.iter().map(|m| m.enqueued).collect();
        Ok::<_, Failure>(row)
    }))
    .await?;
    Ok(json!({"queues": rows, "next_page_token": page.next_page_token}))
}

/// A page of streams with their headline numbers.
async fn stream_rows(calls: &Calls<'_>, page_token: String) -> Result<Value, Failure> {
    let page = calls
        .stream()
        .list_streams(calls.request(ListStreamsRequest {
            page_size: OVERVIEW_PAGE,
            page_token,
        }))
        .await?
        .into_inner();
    let rows = try_join_all(page.streams.iter().map(|stream| async move {
        let request = calls.request(StreamInfoRequest {
            stream: stream.clone(),
        });
        let info = calls.stream().info(request).await?.into_inner();
        Ok::<_, Failure>(view::stream_info(stream, &info))
    }))
    .await?;
    Ok(json!({"streams": rows, "next_page_token": page.next_page_token}))
}

/// A page of what this instance's subscribers listen to.
async fn channels(calls: &Calls<'_>, size: u32, page_token: String) -> Result<Value, Failure> {
    let page = calls
        .pubsub()
        .list_channels(calls.request(ListChannelsRequest {
            page_size: size,
            page_token,
        }))
        .await?
        .into_inner();
    Ok(json!({
        "channels": page.channels.iter().map(view::channel).collect::<Vec<_>>(),
        "next_page_token": page.next_page_token,
    }))
}

/// A page of held locks.
async fn locks(calls: &Calls<'_>, size: u32, page_token: String) -> Result<Value, Failure> {
    let page = calls
        .lock()
        .list_locks(calls.request(ListLocksRequest {
            page_size: size,
            page_token,
        }))
        .await?
        .into_inner();
    Ok(json!({
        "locks": page.locks.iter().map(view::held_lock).collect::<Vec<_>>(),
        "next_page_token": page.next_page_token,
    }))
}

/// A queue's counts, settings, the last hour per minute, and how long the job
/// at the head of the line has waited.
async fn queue_page(calls: &Calls<'_>, queue: &str) -> Result<Value, Failure> {
    let request = calls.request(StatsRequest {
        queue: queue.to_owned(),
    });
    let stats = calls.queue().stats(request).await?.into_inner();
    let request = calls.request(GetHistoryRequest {
        queue: queue.to_owned(),
    });
    let minutes = calls
        .queue()
        .get_history(request)
        .await?
        .into_inner()
        .minutes;
    let request = calls.request(ListJobsRequest {
        queue: queue.to_owned(),
        state: JobState::Waiting.into(),
        page_size: 1,
        page_token: String::new(),
    });
    let head = calls.queue().list_jobs(request).await?.into_inner().jobs;
    let mut page = view::stats(queue, &stats);
    page["history"] = minutes.iter().map(view::minute).collect();
    page["next_waiting_since"] = head
        .first()
        .map(|job| view::time(job.enqueue_time.as_ref()))
        .unwrap_or_default()
        .into();
    Ok(page)
}

/// The dead letters the grouping read, and how many the queue has.
struct DeadScan {
    jobs: Vec<JobInfo>,
    total: i64,
}

/// Reads a queue's dead letters in dead-letter order, at most
/// [`DEAD_GROUPING_CAP`] of them.
async fn scan_dead(calls: &Calls<'_>, queue: &str) -> Result<DeadScan, Failure> {
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = calls
            .queue()
            .list_dead(calls.request(ListDeadRequest {
                queue: queue.to_owned(),
                page_size: DEAD_SCAN_PAGE,
                page_token,
            }))
            .await?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() || jobs.len() >= DEAD_GROUPING_CAP {
            jobs.truncate(DEAD_GROUPING_CAP);
            return Ok(DeadScan {
                jobs,
                total: page.total,
            });
        }
        page_token = page.next_page_token;
    }
}

/// The job's last error, which its dead letter is grouped by.
fn last_error(job: &JobInfo) -> &str {
    job.errors.last().map_or("", String::as_str)
}

/// A queue's dead letters grouped by last error, largest group first.
async fn dead_groups(calls: &Calls<'_>, queue: &str) -> Result<Value, Failure> {
    let scan = scan_dead(calls, queue).await?;
    let mut groups: Vec<(&str, Vec<&JobInfo>)> = Vec::new();
    for job in &scan.jobs {
        let error = last_error(job);
        match groups.iter_mut().find(|(e, _)| *e == error) {
            Some((_, jobs)) => jobs.push(job),
            None => groups.push((error, vec![job])),
        }
    }
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let groups: Vec<Value> = groups
        .iter()
        .map(|(error, jobs)| {
            json!({"error": error, "count": jobs.len(),
                "sample": jobs.iter().take(5).map(|j| j.job_id.as_str()).collect::<Vec<_>>()})
        })
        .collect();
    Ok(
        json!({"groups": groups, "grouped": scan.jobs.len(), "total": scan.total,
        "cap": DEAD_GROUPING_CAP}),
    )
}

/// A stream's info and its newest entries.
async fn stream_page(calls: &Calls<'_>, stream: &str) -> Result<Value, Failure> {
    let request = calls.request(StreamInfoRequest {
        stream: stream.to_owned(),
    });
    let info = calls.stream().info(request).await?.into_inner();
    let request = calls.request(RangeRequest {
        stream: stream.to_owned(),
        start: String::new(),
        end: String::new(),
        reverse: true,
        count: STREAM_ENTRIES,
    });
    let entries = calls.stream().range(request).await?.into_inner().entries;
    let mut page = view::stream_info(stream, &info);
    page["entries"] = entries.iter().map(view::entry).collect();
    Ok(page)
}

/// The state a jobs list asks for by name.
fn job_state(name: &str) -> Result<JobState, Failure> {
    Ok(match name {
        "" | "waiting" => JobState::Waiting,
        "delayed" => JobState::Delayed,
        "active" => JobState::Active,
        "completed" => JobState::Completed,
        "dead" => JobState::Dead,
        other => {
            return Err(invalid(format!(
                "state: {other:?} is not one of waiting, delayed, active, completed, dead"
            )));
        }
    })
}

/// An action's JSON body; refuses anything but `application/json`, which is
/// what keeps other sites' forms out.
async fn action_body(request: Request<Incoming>) -> Result<Value, Failure> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(invalid("content-type: actions take application/json"));
    }
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| invalid(format!("body: {e} (at most {MAX_BODY_BYTES} bytes)")))?
        .to_bytes();
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|e| invalid(format!("body: not JSON: {e}")))
}

/// The HTTP status the page gets for a gRPC code.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(value.to_string())));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

fn asset(content_type: &'static str, body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Only our own script and style; payloads are shown as text, never markup.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    reply
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_are_named_like_the_cli_names_them() {
        for state in [
            JobState::Waiting,
            JobState::Delayed,
            JobState::Active,
            JobState::Completed,
            JobState::Dead,
        ] {
            let name = view::state_name(state.into());
            assert!(
                job_state(name).is_ok_and(|parsed| parsed == state),
                "{name}"
            );
        }
        assert!(job_state("lost").is_err());
    }

    #[test]
    fn refusals_map_to_the_http_statuses_a_page_expects() {
        assert_eq!(
            http_status(tonic::Code::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            http_status(tonic::Code::Unauthenticated),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(http_status(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(tonic::Code::FailedPrecondition),
            StatusCode::CONFLICT
        );
    }
}
