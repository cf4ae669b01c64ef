//! The one error type of Redwire and its one mapping to gRPC status codes.
//!
//! Handlers return [`Result`]; tonic sees a [`Status`] only through the exhaustive
//! `From<Error> for Status` below, so a new failure cannot slip out as UNKNOWN.
//! Client mistakes are logged at debug, server-side failures at warn/error, here
//! and nowhere else.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use tonic::{Code, Status};

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// The stored data is not in the state the call needs (wrong Redis type,
    /// stale lease, not an integer).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A concurrent change won.
    #[error("{0}")]
    Aborted(String),
    /// A limit was hit (Redis out of memory, all blocking connections busy).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Redis cannot be reached or refused the call: nothing was written, and
    /// retrying later may work.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The call was sent to Redis but no answer came in time, or (in durable mode)
    /// its write is on the master but the replicas did not confirm it in time: it
    /// may or may not have taken effect (or survive a failover). A write is safe to retry only with its idempotency key
    /// (a job id, an explicit entry id, a lease id).
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

impl Error {
    /// True for Redis trouble that may pass (unreachable, or no answer in time):
    /// long-lived streams wait and try again instead of ending.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::OutcomeUnknown(_))
    }

    /// The error of a read whose reply would hold more than `limit` bytes.
    pub fn reply_too_large(limit: impl std::fmt::Display) -> Self {
        Self::ResourceExhausted(format!(
            "the reply would hold more than {limit} bytes (--max-message-bytes); ask for less: a smaller range or fewer keys"
        ))
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
            ErrorKind::AuthenticationFailed => Self::Unavailable(format!(
                "redis refused Redwire's credentials (check the password in the Redis URL): {err}"
            )),
            ErrorKind::Server(ServerErrorKind::ExecAbort) => Self::Aborted(err.to_string()),
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
        "WRONGTYPE" => Error::FailedPrecondition(
            "the key holds a different kind of value than this call works on".into(),
        ),
        "OOM" => Error::ResourceExhausted(format!("redis is out of memory: {detail}")),
        SCRIPT_PRECONDITION => Error::FailedPrecondition(detail),
        SCRIPT_TOO_LARGE => Error::reply_too_large(detail),
        "NOSCRIPT" | "LOADING" | "READONLY" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" => {
            Error::Unavailable(text)
        }
        "NOAUTH" | "WRONGPASS" | "NOPERM" => Error::Unavailable(format!(
            "redis refused Redwire's credentials (check the user and password in the Redis URL): {text}"
        )),
        // XGROUP and XINFO on a key that does not exist.
        _ if detail.contains("requires the key to exist") || detail.contains("no such key") => {
            Error::NotFound("the stream does not exist".into())
        }
        _ if detail.contains("not an integer")
            || detail.contains("overflow")
            || detail.contains("not a valid float") =>
        {
            Error::FailedPrecondition(format!("the stored value {detail}"))
        }
        _ => Error::Internal(text),
    }
}

/// The error code our Lua scripts use (`redis.error_reply("RWPRECONDITION ...")`)
/// for "the stored data is not what this call needs"; it maps to FAILED_PRECONDITION.
pub const SCRIPT_PRECONDITION: &str = "RWPRECONDITION";

/// The error code `bounded_read.lua` answers with (`RWTOOLARGE <limit>`) when a
/// reply would be over its limit; it maps to RESOURCE_EXHAUSTED.
pub const SCRIPT_TOO_LARGE: &str = "RWTOOLARGE";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        let code = match err {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::NotFound(_) => Code::NotFound,
            Error::Aborted(_) => Code::Aborted,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) | Error::ShuttingDown => Code::Unavailable,
            Error::OutcomeUnknown(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        };
        // `error`, not `message`: a field named `message` would be a second
        // "message" key next to the event's own in JSON logs.
        let name = code_name(code);
        match code {
            Code::Internal => tracing::error!(code = name, error = %message, "request failed"),
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
                tracing::warn!(code = name, error = %message, "request failed")
            }
            _ => tracing::debug!(code = name, error = %message, "request rejected"),
        }
        Status::new(code, message)
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
