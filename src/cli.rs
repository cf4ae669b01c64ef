//! The operator CLI: `redwire queue ls`, `redwire stream tail orders`, ... —
//! subcommands of the one binary that speak gRPC to a running Redwire, with
//! tables for people and `--json` for scripts.
//!
//! Exit codes (one place: [`exit_code`]): 0 done; 1 any other failure; 2 bad
//! usage (clap's); 3 not found (a missing job, stream, key, or an empty cache
//! get); 4 not allowed (no token, or a grant that does not cover it); 5
//! unavailable (no server, Redis down, shutting down, a deadline): try again.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};

use crate::proto::cache_client::CacheClient;
use crate::proto::lock_client::LockClient;
use crate::proto::pub_sub_client::PubSubClient;
use crate::proto::queue_client::QueueClient;
use crate::proto::stream_client::StreamClient;
use crate::proto::*;
use crate::view::{self, bytes, duration, state_name, time};

/// How the CLI reaches Redwire, from flags or the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The Redwire gRPC endpoint (https:// for TLS).
    #[arg(
        long,
        global = true,
        env = "REDWIRE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// A bearer token (docs/AUTH.md).
    #[arg(long, global = true, env = "REDWIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The PEM CA that signed the server's certificate (https:// endpoints).
    #[arg(long, global = true, env = "REDWIRE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mTLS, with --tls-key.
    #[arg(long, global = true, env = "REDWIRE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, env = "REDWIRE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long one call may take.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print JSON (one object; one per line for tail and subscribe) instead of
    /// tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A client subcommand and where to send it.
#[derive(Debug, Clone, clap::Args)]
pub struct Client<C: clap::Subcommand> {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: C,
}

/// `redwire queue ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// Every queue with its counts per state.
    Ls,
    /// One queue's counts per state, pause and rate limit.
    Stats {
        /// The queue.
        queue: String,
    },
    /// A queue's jobs in one state, a page at a time.
    Jobs {
        /// The queue.
        queue: String,
        /// waiting, delayed, active, completed or dead.
        #[arg(long, default_value = "waiting")]
        state: StateArg,
        /// Jobs per page.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where to continue (the next_page_token a page printed).
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One job: state, attempts, errors, payload, trace id.
    Job {
        /// The queue.
        queue: String,
        /// The job's id.
        job_id: String,
    },
    /// Moves dead jobs back to waiting.
    Redrive {
        /// The queue.
        queue: String,
        /// Redrive these dead jobs.
        #[arg(long = "job", required_unless_present = "all", conflicts_with = "all")]
        jobs: Vec<String>,
        /// Redrive every dead job.
        #[arg(long)]
        all: bool,
    },
    /// Stops deliveries (enqueueing goes on).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Restarts deliveries.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Deletes one job no consumer holds.
    Delete {
        /// The queue.
        queue: String,
        /// The job's id.
        job_id: String,
    },
    /// Events per minute over the last hour.
    History {
        /// The queue.
        queue: String,
    },
}

/// A job state on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateArg {
    /// Ready for delivery.
    Waiting,
    /// Waiting for a delay or backoff.
    Delayed,
    /// Leased to a consumer.
    Active,
    /// Acked and kept.
    Completed,
    /// Dead-lettered.
    Dead,
}

impl From<StateArg> for JobState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Waiting => JobState::Waiting,
            StateArg::Delayed => JobState::Delayed,
            StateArg::Active => JobState::Active,
            StateArg::Completed => JobState::Completed,
            StateArg::Dead => JobState::Dead,
        }
    }
}

/// `redwire stream ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StreamCommand {
    /// Every stream.
    Ls,
    /// One stream: length, first and last ids, groups and their consumers.
    Info {
        /// The stream.
        stream: String,
    },
    /// Prints entries as they are appended (after --from), until --count or
    /// Ctrl-C.
    Tail {
        /// The stream.
        stream: String,
        /// Start after this id: `$` (new entries only) or `0` (everything).
        #[arg(long, default_value = "$")]
        from: String,
        /// Stop after this many entries.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `redwire pubsub ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PubSubCommand {
    /// What this server's subscribers listen to: names, kinds, subscriber
    /// counts and drops.
    Ls,
    /// Publishes one message.
    Publish {
        /// The channel.
        channel: String,
        /// The message.
        message: String,
    },
    /// Prints messages of the channels until --count or Ctrl-C.
    Subscribe {
        /// The channels.
        #[arg(required = true)]
        channels: Vec<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `redwire lock ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LockCommand {
    /// Every held lock: resource, ttl, fencing token, waiters.
    Ls,
    /// Whether a resource is held, its ttl, fencing token and waiters.
    Describe {
        /// The resource.
        resource: String,
    },
}

/// `redwire cache ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CacheCommand {
    /// Prints a key's value (exit 3 when it has none).
    Get {
        /// The key.
        key: String,
    },
    /// Sets a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live (e.g. 30s, 10m); none keeps it forever.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
}

/// The client subcommands of `redwire`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// Queues: ls, stats, jobs, job, redrive, pause, resume, delete, history.
    Queue(Client<QueueCommand>),
    /// Streams: ls, info, tail.
    Stream(Client<StreamCommand>),
    /// Pub/sub: publish, subscribe.
    Pubsub(Client<PubSubCommand>),
    /// Locks: describe.
    Lock(Client<LockCommand>),
    /// Cache: get, set.
    Cache(Client<CacheCommand>),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The server's answer.
    #[error("{}: {}", crate::error::code_name(.0.code()), .0.message())]
    Status(#[from] Status),
    /// Before any call: a bad endpoint or TLS file.
    #[error("{0}")]
    Setup(String),
    /// The looked-for thing is not there (not an error status).
    #[error("{0}")]
    NotFound(String),
}

/// The process exit code for `failure` (see the module docs).
fn exit_code(failure: &Failure) -> u8 {
    match failure {
        Failure::NotFound(_) => 3,
        Failure::Setup(_) => 1,
        Failure::Status(status) => match status.code() {
            Code::NotFound => 3,
            Code::Unauthenticated | Code::PermissionDenied => 4,
            Code::Unavailable | Code::DeadlineExceeded => 5,
            _ => 1,
        },
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Conn = InterceptedService<Channel, Bearer>;

/// A connection to the server `args` names.
async fn connect(args: &ClientArgs) -> Result<Conn, Failure> {
    let setup = |what: &str, e: &dyn std::fmt::Display| Failure::Setup(format!("{what}: {e}"));
    let mut endpoint = Channel::from_shared(args.server.clone())
        .map_err(|e| setup("--server", &e))?
        .timeout(args.timeout)
        .connect_timeout(args.timeout);
    if args.server.starts_with("https://") || args.tls_ca.is_some() {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &args.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| setup("--tls-ca", &e))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            let cert = std::fs::read(cert).map_err(|e| setup("--tls-cert", &e))?;
            let key = std::fs::read(key).map_err(|e| setup("--tls-key", &e))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| setup("TLS", &e))?;
    }
    let token = match &args.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse()
                .map_err(|_| Failure::Setup("--token: not a valid header value".into()))?,
        ),
        None => None,
    };
    let channel = endpoint.connect_lazy();
    Ok(InterceptedService::new(channel, Bearer(token)))
}

/// Runs a client subcommand and says how it went.
pub fn run(command: &ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("redwire: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = dispatch(command) => outcome,
            // Ctrl-C ends tail and subscribe; that is their normal end.
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("redwire: {failure}");
            ExitCode::from(exit_code(&failure))
        }
    }
}

async fn dispatch(command: &ClientCommand) -> Result<(), Failure> {
    match command {
        ClientCommand::Queue(c) => queue(&c.client, &c.command).await,
        ClientCommand::Stream(c) => stream(&c.client, &c.command).await,
        ClientCommand::Pubsub(c) => pubsub(&c.client, &c.command).await,
        ClientCommand::Lock(c) => lock(&c.client, &c.command).await,
        ClientCommand::Cache(c) => cache(&c.client, &c.command).await,
    }
}

/// Prints `value` as JSON, or `table` for people: the CLI's output.
#[allow(clippy::print_stdout)]
fn print(args: &ClientArgs, value: &Value, table: impl FnOnce() -> String) {
    let text = if args.json {
        value.to_string()
    } else {
        table()
    };
    println!("{}", text.trim_end());
}

/// Rows as columns padded to their widest cell, with a header row.
/// Every item of a listing rpc: `fetch` gets a page token and answers a
/// page's items and the next token (empty on the last page).
async fn every_page<T, Fetch, Page>(mut fetch: Fetch) -> Result<Vec<T>, Failure>
where
    Fetch: FnMut(String) -> Page,
    Page: Future<Output = Result<(Vec<T>, String), Failure>>,
{
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        let (page, next) = fetch(page_token).await?;
        items.extend(page);
        if next.is_empty() {
            return Ok(items);
        }
        page_token = next;
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `key: value` lines.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

async fn queue(args: &ClientArgs, command: &QueueCommand) -> Result<(), Failure> {
    let mut client = QueueClient::new(connect(args).await?);
    match command {
        QueueCommand::Ls => {
            let queues = every_page(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_queues(ListQueuesRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.queues, page.next_page_token))
                }
            })
            .await?;
            let mut rows = Vec::with_capacity(queues.len());
            for queue in queues {
                let stats = client
                    .stats(StatsRequest {
                        queue: queue.clone(),
                    })
                    .await?
                    .into_inner();
                rows.push((queue, stats));
            }
            let value = Value::Array(
                rows.iter()
                    .map(|(queue, s)| view::stats(queue, s))
                    .collect(),
            );
            print(args, &value, || {
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(queue, s)| {
                        vec![
                            queue.clone(),
                            s.waiting.to_string(),
                            s.delayed.to_string(),
                            s.active.to_string(),
                            s.completed.to_string(),
                            s.dead.to_string(),
                            if s.paused { "yes" } else { "" }.to_owned(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "QUEUE",
                        "WAITING",
                        "DELAYED",
                        "ACTIVE",
                        "COMPLETED",
                        "DEAD",
                        "PAUSED",
                    ],
                    &cells,
                )
            });
        }
        QueueCommand::Stats { queue } => {
            let s = client
                .stats(StatsRequest {
                    queue: queue.clone(),
                })
                .await?
                .into_inner();
            let window = duration(s.rate_limit_window.as_ref());
            print(args, &view::stats(queue, &s), || {
                let rate = if s.rate_limit_max > 0 {
                    format!("{} per {window}", s.rate_limit_max)
                } else {
                    "none".to_owned()
                };
                fields(&[
                    ("queue", queue.clone()),
                    ("waiting", s.waiting.to_string()),
                    ("delayed", s.delayed.to_string()),
                    ("active", s.active.to_string()),
                    ("completed", s.completed.to_string()),
                    ("dead", s.dead.to_string()),
                    ("paused", s.paused.to_string()),
                    ("rate limit", rate),
                ])
            });
        }
        QueueCommand::Jobs {
            queue,
            state,
            limit,
            page_token,
        } => {
            let page = client
                .list_jobs(ListJobsRequest {
                    queue: queue.clone(),
                    state: JobState::from(*state) as i32,
                    page_size: *limit,
                    page_token: page_token.clone(),
                })
                .await?
                .into_inner();
            let value = json!({
                "jobs": page.jobs.iter().map(view::job).collect::<Vec<_>>(),
                "total": page.total,
                "next_page_token": page.next_page_token,
            });
            print(args, &value, || {
                let rows: Vec<Vec<String>> = page
                    .jobs
                    .iter()
                    .map(|job| {
                        vec![
                            job.job_id.clone(),
                            state_name(job.state).to_owned(),
                            format!("{}/{}", job.attempts, job.max_attempts),
                            time(job.enqueue_time.as_ref()),
                            job.errors.last().cloned().unwrap_or_default(),
                        ]
                    })
                    .collect();
                let mut out = table(
                    &["JOB", "STATE", "ATTEMPTS", "ENQUEUED", "LAST ERROR"],
                    &rows,
                );
                let _ = write!(out, "{} of {} shown", page.jobs.len(), page.total);
                if !page.next_page_token.is_empty() {
                    let _ = write!(out, "; next page: --page-token {}", page.next_page_token);
                }
                out
            });
        }
        QueueCommand::Job { queue, job_id } => {
            let job = client
                .get_job(GetJobRequest {
                    queue: queue.clone(),
                    job_id: job_id.clone(),
                })
                .await?
                .into_inner()
                .job
                .ok_or_else(|| Failure::NotFound(format!("no job {job_id:?}")))?;
            print(args, &view::job(&job), || {
                let (kind, payload) = bytes(&job.payload);
                let mut out = fields(&[
                    ("job", job.job_id.clone()),
                    ("state", state_name(job.state).to_owned()),
                    (
                        "attempts",
                        format!("{} of {}", job.attempts, job.max_attempts),
                    ),
                    ("priority", job.priority.to_string()),
                    ("group", job.group.clone()),
                    ("enqueued", time(job.enqueue_time.as_ref())),
                    ("due", time(job.due_time.as_ref())),
                    ("trace id", job.trace_id.clone()),
                    (&format!("payload ({kind})"), payload),
                ]);
                for (name, value) in &job.attributes {
                    let _ = writeln!(out, "attribute  {name}={value}");
                }
                for (i, error) in job.errors.iter().enumerate() {
                    let _ = writeln!(out, "error {}  {error}", i + 1);
                }
                out
            });
        }
        QueueCommand::Redrive { queue, jobs, all } => {
            let mut redriven = 0;
            loop {
                let moved = client
                    .redrive(RedriveRequest {
                        queue: queue.clone(),
                        job_ids: jobs.clone(),
                    })
                    .await?
                    .into_inner()
                    .redriven;
                redriven += moved;
                // Without ids each call moves up to --max-batch: go on until none are left.
                if !*all || moved == 0 {
                    break;
                }
            }
            print(args, &json!({ "redriven": redriven }), || {
                format!("{redriven} redriven")
            });
        }
        QueueCommand::Pause { queue } => {
            client
                .pause(PauseRequest {
                    queue: queue.clone(),
                })
                .await?;
            print(args, &json!({ "paused": true }), || {
                format!("{queue} paused")
            });
        }
        QueueCommand::Resume { queue } => {
            client
                .resume(ResumeRequest {
                    queue: queue.clone(),
                })
                .await?;
            print(args, &json!({ "paused": false }), || {
                format!("{queue} resumed")
            });
        }
        QueueCommand::Delete { queue, job_id } => {
            let deleted = client
                .delete_job(DeleteJobRequest {
                    queue: queue.clone(),
                    job_id: job_id.clone(),
                })
                .await?
                .into_inner();
            let state = state_name(deleted.state);
            print(args, &json!({ "deleted": job_id, "state": state }), || {
                format!("{job_id} deleted (it was {state})")
            });
        }
        QueueCommand::History { queue } => {
            let minutes = client
                .get_history(GetHistoryRequest {
                    queue: queue.clone(),
                })
                .await?
                .into_inner()
                .minutes;
            let value = Value::Array(minutes.iter().map(view::minute).collect());
            print(args, &value, || {
                let rows: Vec<Vec<String>> = minutes
                    .iter()
                    .map(|m| {
                        vec![
                            time(m.start_time.as_ref()),
                            m.enqueued.to_string(),
                            m.started.to_string(),
                            m.completed.to_string(),
                            m.retried.to_string(),
                            m.dead_lettered.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "MINUTE",
                        "ENQUEUED",
                        "STARTED",
                        "COMPLETED",
                        "RETRIED",
                        "DEAD",
                    ],
                    &rows,
                )
            });
        }
    }
    Ok(())
}

async fn stream(args: &ClientArgs, command: &StreamCommand) -> Result<(), Failure> {
    let mut client = StreamClient::new(connect(args).await?);
    match command {
        StreamCommand::Ls => {
            let names = every_page(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_streams(ListStreamsRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.streams, page.next_page_token))
                }
            })
            .await?;
            print(args, &json!(names), || names.join("\n"));
        }
        StreamCommand::Info { stream } => {
            let info = client
                .info(StreamInfoRequest {
                    stream: stream.clone(),
                })
                .await?
                .into_inner();
            let value = view::stream_info(stream, &info);
            print(args, &value, || {
                let mut out = fields(&[
                    ("stream", stream.clone()),
                    ("length", info.length.to_string()),
                    ("first id", info.first_id.clone()),
                    ("last id", info.last_id.clone()),
                    ("dead letters", info.dead_letters.to_string()),
                ]);
                let rows: Vec<Vec<String>> = info
                    .groups
                    .iter()
                    .flat_map(|g| {
                        let group = vec![
                            g.name.clone(),
                            String::new(),
                            g.pending.to_string(),
                            if g.lag < 0 {
                                "?".to_owned()
                            } else {
                                g.lag.to_string()
                            },
                            String::new(),
                        ];
                        std::iter::once(group).chain(g.consumers.iter().map(|c| {
                            vec![
                                String::new(),
                                c.name.clone(),
                                c.pending.to_string(),
                                String::new(),
                                duration(c.idle.as_ref()),
                            ]
                        }))
                    })
                    .collect();
                if !rows.is_empty() {
                    out.push('\n');
                    out.push_str(&table(
                        &["GROUP", "CONSUMER", "PENDING", "LAG", "IDLE"],
                        &rows,
                    ));
                }
                out
            });
        }
        StreamCommand::Tail {
            stream,
            from,
            count,
        } => {
            let mut tail = client
                .tail(TailRequest {
                    streams: vec![TailPosition {
                        stream: stream.clone(),
                        after: from.clone(),
                    }],
                    heartbeat_interval: None,
                })
                .await?
                .into_inner();
            let mut seen = 0;
            while count.is_none_or(|count| seen < count) {
                let Some(reply) = tail.message().await? else {
                    break;
                };
                if let Some(tail_response::Event::Entry(entry)) = reply.event {
                    seen += 1;
                    print(args, &view::entry(&entry), || {
                        let fields: Vec<String> = entry
                            .fields
                            .iter()
                            .map(|(name, value)| format!("{name}={}", bytes(value).1))
                            .collect();
                        format!("{}  {}", entry.id, fields.join(" "))
                    });
                }
            }
        }
    }
    Ok(())
}

async fn pubsub(args: &ClientArgs, command: &PubSubCommand) -> Result<(), Failure> {
    let mut client = PubSubClient::new(connect(args).await?);
    match command {
        PubSubCommand::Ls => {
            let channels = every_page(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_channels(ListChannelsRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.channels, page.next_page_token))
                }
            })
            .await?;
            let value = Value::Array(channels.iter().map(view::channel).collect());
            print(args, &value, || {
                let rows: Vec<Vec<String>> = channels
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            view::subscription_kind(c.kind).to_owned(),
                            c.subscribers.to_string(),
                            c.dropped.to_string(),
                        ]
                    })
                    .collect();
                table(&["NAME", "KIND", "SUBSCRIBERS", "DROPPED"], &rows)
            });
        }
        PubSubCommand::Publish { channel, message } => {
            let receivers = client
                .publish(PublishRequest {
                    channel: channel.clone(),
                    payload: message.clone().into_bytes(),
                    sharded: false,
                })
                .await?
                .into_inner()
                .receivers;
            print(args, &json!({ "receivers": receivers }), || {
                format!("{receivers} receivers")
            });
        }
        PubSubCommand::Subscribe { channels, count } => {
            let mut stream = client
                .subscribe(SubscribeRequest {
                    channels: channels.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut seen = 0;
            while count.is_none_or(|count| seen < count) {
                let Some(reply) = stream.message().await? else {
                    break;
                };
                match reply.event {
                    Some(subscribe_response::Event::Message(message)) => {
                        seen += 1;
                        let (_, payload) = bytes(&message.payload);
                        let value = json!({"channel": message.channel, "payload": payload});
                        print(args, &value, || format!("{}  {payload}", message.channel));
                    }
                    Some(subscribe_response::Event::Gap(gap)) => {
                        eprintln!("redwire: {} messages dropped ({})", gap.dropped, gap.reason);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

async fn lock(args: &ClientArgs, command: &LockCommand) -> Result<(), Failure> {
    let mut client = LockClient::new(connect(args).await?);
    let resource = match command {
        LockCommand::Describe { resource } => resource,
        LockCommand::Ls => {
            let locks = every_page(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_locks(ListLocksRequest {
                            page_size: 0,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.locks, page.next_page_token))
                }
            })
            .await?;
            let value = Value::Array(locks.iter().map(view::held_lock).collect());
            print(args, &value, || {
                let rows: Vec<Vec<String>> = locks
                    .iter()
                    .map(|l| {
                        vec![
                            l.resource.clone(),
                            duration(l.ttl.as_ref()),
                            l.fencing_token.to_string(),
                            l.waiters.to_string(),
                        ]
                    })
                    .collect();
                table(&["RESOURCE", "TTL", "FENCING TOKEN", "WAITERS"], &rows)
            });
            return Ok(());
        }
    };
    let lock = client
        .describe(DescribeRequest {
            resource: resource.clone(),
        })
        .await?
        .into_inner();
    let ttl = duration(lock.ttl.as_ref());
    let value = view::lock(resource, &lock);
    print(args, &value, || {
        fields(&[
            ("resource", resource.clone()),
            ("held", lock.held.to_string()),
            ("ttl", ttl.clone()),
            ("fencing token", lock.fencing_token.to_string()),
            ("waiters", lock.waiters.to_string()),
        ])
    });
    Ok(())
}

async fn cache(args: &ClientArgs, command: &CacheCommand) -> Result<(), Failure> {
    let mut client = CacheClient::new(connect(args).await?);
    match command {
        CacheCommand::Get { key } => {
            let reply = client
                .get(GetRequest { key: key.clone() })
                .await?
                .into_inner();
            if !reply.found {
                return Err(Failure::NotFound(format!("{key:?} has no value")));
            }
            let (encoding, value) = bytes(&reply.value);
            print(
                args,
                &json!({"key": key, "value": value, "encoding": encoding}),
                || value.clone(),
            );
        }
        CacheCommand::Set { key, value, ttl } => {
            client
                .set(SetRequest {
                    key: key.clone(),
                    value: value.clone().into_bytes(),
                    ttl: ttl.map(crate::time::proto_duration),
                    ..Default::default()
                })
                .await?;
            print(args, &json!({ "written": true }), || "OK".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_each_column_to_its_widest_cell() {
        let text = table(
            &["QUEUE", "DEAD"],
            &[
                vec!["mail".into(), "3".into()],
                vec!["invoices".into(), "12".into()],
            ],
        );
        assert_eq!(text, "QUEUE     DEAD\nmail      3\ninvoices  12\n");
    }

    #[test]
    fn exit_codes_tell_scripts_what_happened() {
        let status = |code| Failure::Status(Status::new(code, "x"));
        assert_eq!(exit_code(&status(Code::NotFound)), 3);
        assert_eq!(exit_code(&Failure::NotFound("k".into())), 3);
        assert_eq!(exit_code(&status(Code::PermissionDenied)), 4);
        assert_eq!(exit_code(&status(Code::Unauthenticated)), 4);
        assert_eq!(exit_code(&status(Code::Unavailable)), 5);
        assert_eq!(exit_code(&status(Code::InvalidArgument)), 1);
    }
}
