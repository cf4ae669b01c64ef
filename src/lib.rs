//! Redwire: a gRPC service that gives every language the Redis primitives
//! microservices build on: a Cache, a Lock, a Queue, PubSub and Streams.
//!
//! The binary (`src/main.rs`) only parses [`Config`], sets up logging and calls
//! [`run`] with a bound listener and a shutdown future; tests do the same on
//! `127.0.0.1:0`.
//!
//! # Layout
//! - [`auth`]: bearer tokens from the auth file, their grants, and the tower layer
//!   that checks every call.
//! - [`connection`]: what one client connection may cost: connection cap,
//!   handshake and idle timeouts, the reply memory budget.
//! - [`tls`]: TLS and mTLS on the gRPC listener, client certificate names.
//! - [`reload`]: files read again when they change and on SIGHUP (auth file,
//!   TLS files).
//! - [`codec`]: the protobuf codec (malformed requests are INVALID_ARGUMENT).
//! - [`config`]: every knob, as CLI flags with `REDWIRE_*` environment fallbacks.
//! - [`error`]: the one error type and its one mapping to gRPC status codes.
//! - [`validate`]: request checks that name the offending field.
//! - [`page`]: page tokens of the listing RPCs.
//! - [`deadline`]: the caller's gRPC deadline, to bound blocking waits.
//! - [`redis`]: connections by purpose, the key schema, the embedded redis-server.
//! - [`cache`]: the `redwire.v1.Cache` service.
//! - [`queue`]: the `redwire.v1.Queue` service (job queue, enqueue batching, reaper).
//! - [`pubsub`]: the `redwire.v1.PubSub` service and the per-process subscriber hub.
//! - [`stream`]: the `redwire.v1.Stream` service (event logs, groups, dead letters).
//! - [`lock`]: the `redwire.v1.Lock` service (fencing tokens, Hold, Redlock).
//! - [`health`]: health reporting that follows Redis reachability.
//! - [`group_commit`]: concurrent writes to one key share one Redis call (enqueues
//!   of a queue, appends to a stream).
//! - [`heartbeat`]: heartbeats on long-lived streams (one interval rule, one
//!   message, one stream adapter).
//! - [`named`]: per-process registry of named waiters (wake-up signals, stream
//!   readers, a lock's local line), alive while someone waits.
//! - [`waker`]: wake-ups by name over pub/sub, for queues (ready jobs) and
//!   locks (released resources).
//! - [`producer`]: producer streams (EnqueueStream, AppendStream): one reply per
//!   message, in order, what has arrived handled as one batch.
//! - [`streaming`]: the kit long-lived streams are built from (ready batches,
//!   heartbeats, named waiters, the Redis retry pause, the final status).
//! - [`server`]: assembles services, health and reflection; graceful shutdown.
//! - [`telemetry`]: logging setup, the per-call log line and metrics (one tower
//!   layer), the Prometheus registry and its samplers.
//! - [`admin`]: the admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`framing`]: finds the gRPC messages in a body's frames (payload limits,
//!   stream message counts).
//! - [`cli`]: the operator CLI (`redwire queue ls`, ...), a gRPC client.
//! - [`token`]: unguessable tokens (leases, locks, auth) from a CSPRNG.
//! - [`time`]: durations, timestamps and milliseconds on the wire.
//! - [`proto`]: generated protobuf/gRPC code and the reflection descriptors.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod codec;
pub mod config;
pub mod connection;
pub mod console;
pub mod deadline;
pub mod error;
pub mod framing;
pub mod group_commit;
pub mod health;
pub mod heartbeat;
pub mod lock;
pub mod named;
pub mod page;
pub mod producer;
pub mod proto;
pub mod pubsub;
pub mod queue;
pub mod redis;
pub mod reload;
pub mod server;
pub mod stream;
pub mod streaming;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod token;
pub mod validate;
pub mod view;
pub mod waker;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{Listeners, ServeError, run};
