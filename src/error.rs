//! The one error type of Redwire and its one mapping to gRPC statuses.
//!
//! Handlers return [`Result`]; tonic sees a [`Status`] only through the exhaustive
//! `From<Error> for Status` below, so a new failure cannot slip out as UNKNOWN.
//! Every status carries gRPC's richer error details: an `ErrorInfo` with a stable
//! [`Reason`] and metadata (the field, the limit, the names involved), a
//! `BadRequest` naming the field for INVALID_ARGUMENT, and a `RetryInfo` where a
//! retry can succeed.
//! Client mistakes are logged at debug, server-side failures at warn/error, here
//! and nowhere else.

use std::collections::HashMap;
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `domain` of every `ErrorInfo` Redwire sends.
pub const ERROR_DOMAIN: &str = "redwire.dev";

/// Every way a Redwire call can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending request field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Path of the field in the request message, e.g. `values[3].key`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The call was refused for a [`Reason`] that is not the caller's request
    /// being malformed nor Redis being away: wrong type, stale lease, missing
    /// job, a limit.
    #[error("{}", .0.message)]
    Refused(Box<Refusal>),
    /// Redis cannot be reached or refused the call: nothing was written, and
    /// retrying later may work.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The call was sent to Redis but no answer came in time, or (in durable mode)
    /// its write is on the master but the replicas did not confirm it in time: it
    /// may or may not have taken effect (or survive a failover). A write is safe
    /// to retry only with its idempotency key (a job id, an explicit entry id, a
    /// lease id).
    #[error(
        "the call may or may not have taken effect (retry writes with their idempotency key): {0}"
    )]
    OutcomeUnknown(String),
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// A bug or an answer from Redis we did not expect.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A refusal: its reason, what to tell the caller, and the names and limits it
/// is about (sent as `ErrorInfo.metadata`).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// What to tell the caller.
    pub message: String,
    /// What it is about: `queue`, `job_id`, `limit`, ...
    pub metadata: Vec<(&'static str, String)>,
    /// When to try again, if sooner or later than the reason's usual delay.
    pub retry_after: Option<Duration>,
}

/// The stable reason of an error, sent as `ErrorInfo.reason` (in domain
/// [`ERROR_DOMAIN`]) so programs can act on it; each has one gRPC code. The
/// README's error table lists them all (a test holds it to [`Reason::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A request field is missing, empty, too long or out of range.
    InvalidArgument,
    /// The request message does not decode as the method's protobuf type.
    MalformedMessage,
    /// The key holds another kind of value than the call works on.
    WrongType,
    /// The stored value is not a number, or the result would overflow.
    NotANumber,
    /// A queue ack, nack or extend whose lease token is not the job's current lease.
    LeaseStale,
    /// A lock release or extend by someone who does not hold it.
    LockNotHeld,
    /// No such job in the queue.
    JobNotFound,
    /// The job is leased to a consumer, so it cannot be deleted now.
    JobActive,
    /// No such stream.
    StreamNotFound,
    /// No such consumer group on the stream.
    GroupNotFound,
    /// Redis aborted the call's transaction; nothing was written.
    Conflict,
    /// Redis is out of memory.
    RedisOutOfMemory,
    /// The reply would be larger than `--max-message-bytes`.
    ReplyTooLarge,
    /// The reply does not fit `--reply-buffer-bytes` while other clients have not
    /// read theirs.
    ReplyBudgetExhausted,
    /// Every connection for blocking calls is busy.
    BlockingPoolExhausted,
    /// A subscriber with `slow_policy: DISCONNECT` fell behind.
    SubscriberTooSlow,
    /// Redis cannot be reached, is loading, or its cluster is down.
    RedisUnavailable,
    /// Redis refused Redwire's own credentials (the operator's to fix).
    RedisCredentialsRejected,
    /// The call's outcome is unknown (no answer in time, or replicas did not
    /// confirm a durable write).
    OutcomeUnknown,
    /// The server is shutting down.
    ShuttingDown,
    /// The call carries no token, or one the auth file does not list (or an
    /// expired one).
    Unauthenticated,
    /// The call's token has no grant for the rpc's permission, or for the
    /// name it names.
    PermissionDenied,
    /// The tenant has used its calls per second; the retry delay says when
    /// the next one is allowed.
    QuotaExceeded,
    /// A request message is larger than the tenant's `max_payload_bytes`.
    PayloadTooLarge,
    /// A bug or a Redis reply we did not expect.
    Internal,
}

impl Reason {
    /// Every reason, for the docs test.
    pub const ALL: [Reason; 25] = [
        Reason::InvalidArgument,
        Reason::MalformedMessage,
        Reason::WrongType,
        Reason::NotANumber,
        Reason::LeaseStale,
        Reason::LockNotHeld,
        Reason::JobNotFound,
        Reason::JobActive,
        Reason::StreamNotFound,
        Reason::GroupNotFound,
        Reason::Conflict,
        Reason::RedisOutOfMemory,
        Reason::ReplyTooLarge,
        Reason::ReplyBudgetExhausted,
        Reason::BlockingPoolExhausted,
        Reason::SubscriberTooSlow,
        Reason::RedisUnavailable,
        Reason::RedisCredentialsRejected,
        Reason::OutcomeUnknown,
        Reason::ShuttingDown,
        Reason::Unauthenticated,
        Reason::PermissionDenied,
        Reason::QuotaExceeded,
        Reason::PayloadTooLarge,
        Reason::Internal,
    ];

    /// The name sent as `ErrorInfo.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::MalformedMessage => "MALFORMED_MESSAGE",
            Reason::WrongType => "WRONG_TYPE",
            Reason::NotANumber => "NOT_A_NUMBER",
            Reason::LeaseStale => "LEASE_STALE",
            Reason::LockNotHeld => "LOCK_NOT_HELD",
            Reason::JobNotFound => "JOB_NOT_FOUND",
            Reason::JobActive => "JOB_ACTIVE",
            Reason::StreamNotFound => "STREAM_NOT_FOUND",
            Reason::GroupNotFound => "GROUP_NOT_FOUND",
            Reason::Conflict => "CONFLICT",
            Reason::RedisOutOfMemory => "REDIS_OUT_OF_MEMORY",
            Reason::ReplyTooLarge => "REPLY_TOO_LARGE",
            Reason::ReplyBudgetExhausted => "REPLY_BUDGET_EXHAUSTED",
            Reason::BlockingPoolExhausted => "BLOCKING_POOL_EXHAUSTED",
            Reason::SubscriberTooSlow => "SUBSCRIBER_TOO_SLOW",
            Reason::RedisUnavailable => "REDIS_UNAVAILABLE",
            Reason::RedisCredentialsRejected => "REDIS_CREDENTIALS_REJECTED",
            Reason::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::QuotaExceeded => "QUOTA_EXCEEDED",
            Reason::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Reason::Internal => "INTERNAL",
        }
    }

    /// The gRPC code of errors with this reason.
    pub fn code(self) -> Code {
        match self {
            Reason::InvalidArgument | Reason::MalformedMessage => Code::InvalidArgument,
            Reason::WrongType
            | Reason::NotANumber
            | Reason::LeaseStale
            | Reason::LockNotHeld
            | Reason::JobActive => Code::FailedPrecondition,
            Reason::JobNotFound | Reason::StreamNotFound | Reason::GroupNotFound => Code::NotFound,
            Reason::Conflict => Code::Aborted,
            Reason::RedisOutOfMemory
            | Reason::ReplyTooLarge
            | Reason::ReplyBudgetExhausted
            | Reason::BlockingPoolExhausted
            | Reason::SubscriberTooSlow
            | Reason::QuotaExceeded
            | Reason::PayloadTooLarge => Code::ResourceExhausted,
            Reason::RedisUnavailable | Reason::RedisCredentialsRejected | Reason::ShuttingDown => {
                Code::Unavailable
            }
            Reason::OutcomeUnknown => Code::DeadlineExceeded,
            Reason::Unauthenticated => Code::Unauthenticated,
            Reason::PermissionDenied => Code::PermissionDenied,
            Reason::Internal => Code::Internal,
        }
    }

    /// How long to wait before trying the same call again (`RetryInfo`), for
    /// reasons where a retry can succeed; `None` where it cannot (a malformed
    /// call, a reply that will always be too large) or is the caller's to judge.
    pub fn retry_delay(self) -> Option<Duration> {
        let ms = match self {
            Reason::ReplyBudgetExhausted | Reason::BlockingPoolExhausted => 100,
            Reason::SubscriberTooSlow | Reason::ShuttingDown | Reason::OutcomeUnknown => 100,
            Reason::RedisUnavailable | Reason::RedisOutOfMemory => 1_000,
            Reason::RedisCredentialsRejected => 5_000,
            Reason::Conflict | Reason::QuotaExceeded => 100,
            Reason::InvalidArgument
            | Reason::MalformedMessage
            | Reason::WrongType
            | Reason::NotANumber
            | Reason::LeaseStale
            | Reason::LockNotHeld
            | Reason::JobNotFound
            | Reason::JobActive
            | Reason::StreamNotFound
            | Reason::GroupNotFound
            | Reason::ReplyTooLarge
            | Reason::Unauthenticated
            | Reason::PermissionDenied
            | Reason::PayloadTooLarge
            | Reason::Internal => return None,
        };
        Some(Duration::from_millis(ms))
    }
}

impl Error {
    /// True for Redis trouble that may pass (unreachable, no answer in time, or
    /// credentials an operator may fix): long-lived streams wait and try again
    /// instead of ending.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::OutcomeUnknown(_) => true,
            Self::Refused(refusal) => refusal.reason == Reason::RedisCredentialsRejected,
            _ => false,
        }
    }

    /// The error's stable reason.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidArgument { .. } => Reason::InvalidArgument,
            Self::Refused(refusal) => refusal.reason,
            Self::Unavailable(_) => Reason::RedisUnavailable,
            Self::OutcomeUnknown(_) => Reason::OutcomeUnknown,
            Self::ShuttingDown => Reason::ShuttingDown,
            Self::Internal(_) => Reason::Internal,
        }
    }

    /// A refusal for `reason`, saying `message`.
    pub fn refused(reason: Reason, message: impl Into<String>) -> Self {
        Self::Refused(Box::new(Refusal {
            reason,
            message: message.into(),
            metadata: Vec::new(),
            retry_after: None,
        }))
    }

    /// Sets a refusal's retry delay (`RetryInfo`) to `delay`.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        if let Self::Refused(refusal) = &mut self {
            refusal.retry_after = Some(delay);
        }
        self
    }

    /// Adds `key: value` to a refusal's `ErrorInfo.metadata` (other errors
    /// carry theirs already).
    #[must_use]
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        if let Self::Refused(refusal) = &mut self {
            refusal.metadata.push((key, value.to_string()));
        }
        self
    }

    /// The error of a read whose reply would hold more than `limit` bytes.
    pub fn reply_too_large(limit: impl std::fmt::Display) -> Self {
        Self::refused(
            Reason::ReplyTooLarge,
            format!(
                "the reply would hold more than {limit} bytes (--max-message-bytes); ask for less: a smaller range or fewer keys"
            ),
        )
        .with("limit", limit)
    }

    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<RedisError> for Error {
    fn from(err: RedisError) -> Self {
        if err.is_timeout() {
            return Self::OutcomeUnknown(format!("redis did not answer in time: {err}"));
        }
        if err.is_connection_dropped() || err.is_io_error() || err.is_connection_refusal() {
            return Self::Unavailable(err.to_string());
        }
        match err.kind() {
            // Redwire's Redis credentials are wrong: the operator's to fix, not
            // the caller's, and no request of any caller can succeed meanwhile.
            ErrorKind::AuthenticationFailed => Self::refused(
                Reason::RedisCredentialsRejected,
                format!(
                    "redis refused Redwire's credentials (check the password in the Redis URL): {err}"
                ),
            ),
            ErrorKind::Server(ServerErrorKind::ExecAbort) => {
                Self::refused(Reason::Conflict, err.to_string())
            }
            ErrorKind::Server(ServerErrorKind::CrossSlot) => Self::invalid(
                "keys",
                "the keys of this call map to different Redis Cluster slots",
            ),
            ErrorKind::Server(
                ServerErrorKind::ClusterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading,
            ) => Self::Unavailable(err.to_string()),
            _ => classify_by_code(err),
        }
    }
}

/// Redis error replies a store tells apart from the rest, recognised here and
/// nowhere else: by their code where Redis gives one, by their text where it does
/// not (inside MULTI/EXEC, and for stream commands on a missing key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisReply {
    /// The consumer group does not exist (`NOGROUP`).
    NoGroup,
    /// The consumer group exists already (`BUSYGROUP`).
    GroupExists,
    /// An explicit stream id is not above the stream's last one.
    IdNotAboveLast,
    /// The text is not a stream id.
    InvalidStreamId,
    /// A stream command on a key that does not exist (XGROUP, XINFO).
    NoSuchKey,
}

impl RedisReply {
    /// True when `err` is this reply.
    pub fn matches(self, err: &RedisError) -> bool {
        let text = err.to_string();
        match self {
            Self::NoGroup => err.code() == Some("NOGROUP") || text.contains("NOGROUP"),
            Self::GroupExists => err.code() == Some("BUSYGROUP") || text.contains("BUSYGROUP"),
            Self::IdNotAboveLast => text.contains("equal or smaller"),
            Self::InvalidStreamId => text.contains("Invalid stream ID"),
            Self::NoSuchKey => {
                text.contains("requires the key to exist") || text.contains("no such key")
            }
        }
    }
}

/// Classifies Redis error replies by their code, the first word of the reply.
/// Errors from inside a MULTI/EXEC carry no code of their own, so the text is
/// searched for the codes we care about as well.
fn classify_by_code(err: RedisError) -> Error {
    let text = err.to_string();
    let detail = err.detail().unwrap_or(&text).to_owned();
    let code = err
        .code()
        .map(str::to_owned)
        .or_else(|| {
            ["WRONGTYPE", "OOM", SCRIPT_PRECONDITION]
                .into_iter()
                .find(|c| text.contains(c))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    match code.as_str() {
        "WRONGTYPE" => Error::refused(
            Reason::WrongType,
            "the key holds a different kind of value than this call works on",
        ),
        "OOM" => Error::refused(
            Reason::RedisOutOfMemory,
            format!("redis is out of memory: {detail}"),
        ),
        SCRIPT_PRECONDITION => Error::refused(Reason::WrongType, detail),
        SCRIPT_TOO_LARGE => Error::reply_too_large(detail),
        "NOSCRIPT" | "LOADING" | "READONLY" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" => {
            Error::Unavailable(text)
        }
        "NOAUTH" | "WRONGPASS" | "NOPERM" => Error::refused(
            Reason::RedisCredentialsRejected,
            format!(
                "redis refused Redwire's credentials (check the user and password in the Redis URL): {text}"
            ),
        ),
        _ if RedisReply::NoSuchKey.matches(&err) => {
            Error::refused(Reason::StreamNotFound, "the stream does not exist")
        }
        _ if detail.contains("not an integer")
            || detail.contains("overflow")
            || detail.contains("not a valid float") =>
        {
            Error::refused(Reason::NotANumber, format!("the stored value {detail}"))
        }
        _ => Error::Internal(text),
    }
}

/// The error code our Lua scripts use (`redis.error_reply("RWPRECONDITION ...")`)
/// for "the key holds something other than what this call works on" (reason
/// WRONG_TYPE, FAILED_PRECONDITION).
pub const SCRIPT_PRECONDITION: &str = "RWPRECONDITION";

/// The error code `bounded_read.lua` answers with (`RWTOOLARGE <limit>`) when a
/// reply would be over its limit; it maps to RESOURCE_EXHAUSTED.
pub const SCRIPT_TOO_LARGE: &str = "RWTOOLARGE";

impl Error {
    /// The HTTP/2 trailers that end a reply already under way with this error.
    pub fn into_trailers(self) -> tonic::codegen::http::HeaderMap {
        let mut trailers = tonic::codegen::http::HeaderMap::new();
        // Our messages are text we wrote; adding them cannot fail.
        let _ = Status::from(self).add_header(&mut trailers);
        trailers
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        let reason = err.reason();
        let code = reason.code();
        let why = reason.as_str();
        let mut metadata: HashMap<String, String> = HashMap::new();
        let mut details = ErrorDetails::new();
        let mut retry = reason.retry_delay();
        match &err {
            Error::InvalidArgument { field, reason } => {
                details.add_bad_request_violation(field.clone(), reason.clone());
                metadata.insert("field".into(), field.clone());
            }
            Error::Refused(refusal) => {
                let pairs = refusal.metadata.iter();
                metadata.extend(pairs.map(|(key, value)| ((*key).to_owned(), value.clone())));
                retry = refusal.retry_after.or(retry);
            }
            Error::Unavailable(_)
            | Error::OutcomeUnknown(_)
            | Error::ShuttingDown
            | Error::Internal(_) => {}
        }
        details.set_error_info(why, ERROR_DOMAIN, metadata);
        if let Some(delay) = retry {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(code, message, details)
    }
}

/// The canonical name of a gRPC status code, as the gRPC spec writes it
/// (`INVALID_ARGUMENT`), for logs.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str, detail: &str) -> RedisError {
        let raw = format!("{code} {detail}");
        redis::parse_redis_value(format!("-{raw}\r\n").as_bytes())
            .and_then(|v| v.extract_error())
            .expect_err("an error reply")
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(Error::invalid("values[2].key", "must not be empty"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "values[2].key: must not be empty");
    }

    #[test]
    fn every_status_carries_its_reason_and_the_details_a_program_acts_on() {
        let status = Status::from(Error::invalid("values[2].key", "must not be empty"));
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("field").map(String::as_str),
            Some("values[2].key")
        );
        let violations = &details.bad_request().expect("BadRequest").field_violations;
        assert_eq!(violations[0].field, "values[2].key");
        assert_eq!(violations[0].description, "must not be empty");
        assert!(
            details.retry_info().is_none(),
            "a malformed call is not retried"
        );

        let status = Status::from(Error::Unavailable("connection refused".into()));
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().expect("info").reason,
            "REDIS_UNAVAILABLE"
        );
        let retry = details.retry_info().expect("RetryInfo").retry_delay;
        assert_eq!(retry, Some(Duration::from_secs(1)));

        let status = Status::from(Error::reply_too_large(1024));
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("info");
        assert_eq!(info.reason, "REPLY_TOO_LARGE");
        assert_eq!(info.metadata.get("limit").map(String::as_str), Some("1024"));
    }

    #[test]
    fn each_reason_has_one_name_and_every_unavailable_or_exhausted_one_a_retry() {
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            // A reply or request that is too large stays too large on a retry.
            let too_large = matches!(reason, Reason::ReplyTooLarge | Reason::PayloadTooLarge);
            if matches!(reason.code(), Code::Unavailable | Code::ResourceExhausted) && !too_large {
                assert!(reason.retry_delay().is_some(), "{reason:?}");
            }
        }
    }

    #[test]
    fn wrongtype_is_failed_precondition() {
        let err = Error::from(server_error(
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value",
        ));
        assert_eq!(Status::from(err).code(), Code::FailedPrecondition);
    }

    #[test]
    fn not_an_integer_is_failed_precondition() {
        let err = Error::from(server_error(
            "ERR",
            "value is not an integer or out of range",
        ));
        assert_eq!(Status::from(err).code(), Code::FailedPrecondition);
    }

    #[test]
    fn oom_is_resource_exhausted() {
        let err = Error::from(server_error(
            "OOM",
            "command not allowed when used memory > 'maxmemory'.",
        ));
        assert_eq!(Status::from(err).code(), Code::ResourceExhausted);
    }

    #[test]
    fn script_errors_with_our_prefix_are_failed_precondition() {
        let err = Error::from(server_error(
            "RWPRECONDITION",
            "the key is not a Bloom filter",
        ));
        let status = Status::from(err);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "the key is not a Bloom filter");
    }

    #[test]
    fn io_errors_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::from(RedisError::from(io));
        assert_eq!(Status::from(err).code(), Code::Unavailable);
    }

    #[test]
    fn wrong_credentials_are_unavailable() {
        for (code, detail) in [
            (
                "WRONGPASS",
                "invalid username-password pair or user is disabled.",
            ),
            ("NOAUTH", "Authentication required."),
        ] {
            let status = Status::from(Error::from(server_error(code, detail)));
            assert_eq!(status.code(), Code::Unavailable, "{code}");
            assert!(status.message().contains("credentials"), "{status:?}");
        }
    }

    #[test]
    fn a_missing_stream_is_not_found() {
        let err = Error::from(server_error(
            "ERR",
            "The XGROUP subcommand requires the key to exist.",
        ));
        assert_eq!(Status::from(err).code(), Code::NotFound);
    }

    #[test]
    fn shutting_down_is_unavailable() {
        assert_eq!(Status::from(Error::ShuttingDown).code(), Code::Unavailable);
    }
}
