//! OpenTelemetry traces, exported over OTLP/gRPC when the standard `OTEL_*`
//! environment asks for them (off otherwise), and the W3C trace context that
//! travels with the work.
//!
//! Spans (names and attributes after the OpenTelemetry RPC and messaging
//! conventions):
//! - one server span per call, `redwire.v1.Queue/Enqueue`, a child of the
//!   caller's `traceparent` (built by [`super::requests`]);
//! - `send <queue>` (producer) around each enqueue, a child of the call's span;
//!   its context is stored with the job;
//! - `receive <queue>` (consumer) when a job is handed out, a child of the
//!   consumer's call and linked to the producer's `send` span.
//!
//! The job's [`TraceContext`] reaches the consumer in every `Delivery`, so the
//! consumer's own processing span can link to the producer too. When Redwire
//! exports nothing, the producer call's own `traceparent` is stored as sent, so
//! traces still join up between instrumented clients.
//!
//! Only spans with target [`TARGET`] are exported; the log filter (`--log`)
//! does not decide what is traced.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::Code;
use tonic::codegen::http;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::proto::TraceContext;

/// The target of every span meant for export.
pub const TARGET: &str = "redwire::trace";

/// The header names of the W3C trace context.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Set once an exporter is installed; read on every call.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP exporter is installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Why the `OTEL_*` environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    /// An exporter or protocol Redwire does not have.
    #[error("{variable}={value:?}: {why}")]
    Unsupported {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is supported instead.
        why: &'static str,
    },
    /// The OTLP exporter could not be built (a malformed endpoint, say).
    #[error("the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What the environment asks for: whether to export traces. Exporting is on
/// when `OTEL_TRACES_EXPORTER=otlp` or an OTLP endpoint is set, and off when
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
fn wanted(var: impl Fn(&str) -> Option<String>) -> Result<bool, TraceSetupError> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    let endpoint_set = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| var(name).is_some());
    let wanted = match var("OTEL_TRACES_EXPORTER").as_deref() {
        None => endpoint_set,
        Some("otlp") => true,
        Some("none") => false,
        Some(other) => {
            return Err(TraceSetupError::Unsupported {
                variable: "OTEL_TRACES_EXPORTER",
                value: other.to_owned(),
                why: "Redwire exports traces with \"otlp\" (or \"none\")",
            });
        }
    };
    let protocol = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|variable| var(variable).map(|value| (variable, value)));
    if wanted
        && let Some((variable, value)) = protocol
        && value != "grpc"
    {
        return Err(TraceSetupError::Unsupported {
            variable,
            value,
            why: "Redwire speaks OTLP over gRPC only (\"grpc\")",
        });
    }
    Ok(wanted)
}

/// The non-empty value of environment variable `name`.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The tracer provider the environment asks for, exporting in batches over
/// OTLP/gRPC (endpoint, headers, timeout, sampler, batching and resource from
/// the standard `OTEL_*` variables; `service.name` defaults to `redwire`), or
/// None. Must run inside the Tokio runtime.
pub fn provider_from_env() -> Result<Option<SdkTracerProvider>, TraceSetupError> {
    if !wanted(env_var)? {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if env_var("OTEL_SERVICE_NAME").is_none()
        && !env_var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| attrs.contains("service.name="))
    {
        resource = resource.with_service_name("redwire");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(Some(provider))
}

/// Marks spans as exported from here on: called once the layer is installed.
pub(super) fn mark_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// The layer that turns [`TARGET`] spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer as _;
    // Busy/idle times, code locations, threads, targets and an OpenTelemetry
    // context made current on every poll cost more than they tell here:
    // parents are passed explicitly, and spans carry the RPC and messaging
    // attributes instead.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("redwire"))
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.target() == TARGET
        }))
}

/// The two W3C header values, as a propagator reads and writes them.
#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

impl Carrier {
    fn from_headers(headers: &http::HeaderMap) -> Self {
        let value = |name| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            traceparent: value(TRACEPARENT),
            tracestate: value(TRACESTATE),
        }
    }

    fn from_context(context: &TraceContext) -> Self {
        Self {
            traceparent: Some(context.traceparent.clone()),
            tracestate: Some(context.tracestate.clone()),
        }
    }

    fn extract(&self) -> Context {
        TraceContextPropagator::new().extract(self)
    }

    /// The carried context, when its `traceparent` is valid.
    fn into_trace_context(self) -> Option<TraceContext> {
        let valid = self.extract().span().span_context().is_valid();
        valid.then(|| TraceContext {
            traceparent: self.traceparent.unwrap_or_default(),
            tracestate: self.tracestate.unwrap_or_default(),
        })
    }

    /// The context of `span`; the propagator writes nothing for an invalid one.
    fn of_span(span: &tracing::Span) -> Option<TraceContext> {
        let mut carrier = Carrier::default();
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
        let traceparent = carrier.traceparent?;
        Some(TraceContext {
            traceparent,
            tracestate: carrier.tracestate.unwrap_or_default(),
        })
    }
}

/// The trace id of `context` (32 hex digits), or empty.
pub fn trace_id(context: &TraceContext) -> String {
    let span = Carrier::from_context(context).extract();
    let span_context = span.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

/// The server span of a call to `path` (`/package.Service/Method`), a child of
/// the caller's `traceparent` when spans are exported. Also the context of the
/// call's log lines (`grpc{method=...}`).
pub fn server_span(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    if !exporting() {
        return tracing::info_span!(target: TARGET, "grpc", method = path);
    }
    // Attributes as fields: one pass when the span is made, where setting each
    // afterwards would look the span up again.
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        target: TARGET,
        "grpc",
        method = path,
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    let _ = span.set_parent(Carrier::from_headers(headers).extract());
    span
}

/// Records a call's status code on its server span; the codes the RPC
/// conventions count as server errors also set the span's status.
pub fn finish_server_span(span: &tracing::Span, code: Code, message: &str) {
    if !exporting() {
        return;
    }
    span.set_attribute("rpc.grpc.status_code", i64::from(code as i32));
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_status(Status::error(message.to_owned()));
    }
}

/// Where the work a call produces comes from, taken when its handler starts:
/// the parent of its `send` spans, or the caller's own context.
#[derive(Debug, Clone)]
pub enum Producer {
    /// Spans are exported: the call's span.
    Exporting(tracing::Span),
    /// Not exported: the caller's trace context, stored as it sent it.
    Caller(Option<TraceContext>),
}

/// One `send`: the span to run the write in, and the context to store.
#[derive(Debug)]
pub struct Sending {
    /// `send <destination>`, or a disabled span when nothing is exported.
    pub span: tracing::Span,
    /// The context to store with the job.
    pub context: Option<TraceContext>,
}

impl Producer {
    /// The producer side of the call `request`, from inside its handler.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        if exporting() {
            return Self::Exporting(tracing::Span::current());
        }
        Self::Caller(Carrier::from_headers(request.metadata().as_ref()).into_trace_context())
    }

    /// A `send <destination>` of `count` messages (`message_id` when one).
    pub fn send(&self, destination: &str, count: usize, message_id: Option<&str>) -> Sending {
        match self {
            Self::Caller(context) => Sending {
                span: tracing::Span::none(),
                context: context.clone(),
            },
            Self::Exporting(call) => {
                let span = messaging_span(call, "send", "producer", destination);
                if count != 1 {
                    span.set_attribute("messaging.batch.message_count", count as i64);
                }
                if let Some(id) = message_id {
                    span.set_attribute("messaging.message.id", id.to_owned());
                }
                let context = Carrier::of_span(&span);
                Sending { span, context }
            }
        }
    }
}

/// A messaging span `<operation> <destination>` of `kind`, a child of `parent`.
fn messaging_span(
    parent: &tracing::Span,
    operation: &'static str,
    kind: &'static str,
    destination: &str,
) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        parent: parent,
        "messaging",
        otel.name = format!("{operation} {destination}"),
        otel.kind = kind,
        messaging.system = "redwire",
        messaging.operation.type = operation,
        messaging.operation.name = operation,
        messaging.destination.name = destination,
    )
}

/// The consumer side of a call that hands out work: the call's span when
/// spans are exported.
#[derive(Debug, Clone)]
pub struct Consumer(Option<tracing::Span>);

impl Consumer {
    /// The consumer side of the call whose handler runs now.
    pub fn current() -> Self {
        Self(exporting().then(tracing::Span::current))
    }

    /// Records the hand-over of message `message_id` from `destination`: a
    /// `receive` span in the consumer's trace, linked to the producer's.
    pub fn received(&self, destination: &str, message_id: &str, producer: Option<&TraceContext>) {
        let Some(call) = &self.0 else {
            return;
        };
        let span = messaging_span(call, "receive", "consumer", destination);
        span.set_attribute("messaging.message.id", message_id.to_owned());
        if let Some(producer) = producer {
            let linked = Carrier::from_context(producer).extract();
            span.add_link(linked.span().span_context().clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn exporting_is_off_unless_configured() {
        assert!(!wanted(vars(&[])).expect("valid"));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(wanted(vars(&[endpoint])).expect("valid"));
        assert!(wanted(vars(&[("OTEL_TRACES_EXPORTER", "otlp")])).expect("valid"));
        let none = ("OTEL_TRACES_EXPORTER", "none");
        assert!(!wanted(vars(&[endpoint, none])).expect("valid"));
        let disabled = ("OTEL_SDK_DISABLED", "true");
        assert!(!wanted(vars(&[endpoint, disabled])).expect("valid"));
    }

    #[test]
    fn unsupported_exporters_and_protocols_are_named() {
        let zipkin = wanted(vars(&[("OTEL_TRACES_EXPORTER", "zipkin")])).expect_err("zipkin");
        assert!(
            zipkin.to_string().contains("OTEL_TRACES_EXPORTER"),
            "{zipkin}"
        );
        let http = wanted(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]))
        .expect_err("http/protobuf");
        assert!(
            http.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{http}"
        );
        // The traces-specific variable wins over the general one.
        let grpc = wanted(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]));
        assert!(grpc.expect("valid"));
    }

    #[test]
    fn only_valid_traceparents_are_kept() {
        let valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let carrier = |traceparent: &str| Carrier {
            traceparent: Some(traceparent.to_owned()),
            tracestate: Some("vendor=1".to_owned()),
        };
        let kept = carrier(valid).into_trace_context().expect("valid");
        assert_eq!(kept.traceparent, valid);
        assert_eq!(kept.tracestate, "vendor=1");
        assert_eq!(trace_id(&kept), "0af7651916cd43dd8448eb211c80319c");
        for invalid in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        ] {
            assert_eq!(carrier(invalid).into_trace_context(), None, "{invalid:?}");
        }
        assert_eq!(trace_id(&TraceContext::default()), "");
    }
}
