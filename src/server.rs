//! Assembles the gRPC server (services, health, reflection, limits) and runs it on
//! an already bound listener until a shutdown future resolves.
//!
//! Shutdown order: health goes NOT_SERVING, the shared cancellation token fires
//! (blocking calls end with UNAVAILABLE, background tasks stop), the server stops
//! accepting and lets in-flight calls finish, and `--shutdown-grace` bounds the
//! whole drain. The embedded redis-server, if any, is stopped last.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tower::util::BoxCloneSyncService;

use crate::admin::{self, Admin};
use crate::auth::{Auth, AuthLayer, KeyringError};
use crate::cache::{CacheService, CacheStore};
use crate::config::{Config, RedisTarget};
use crate::connection::{self, ReplyLayer};
use crate::console::Console;
use crate::health::{self, Health};
use crate::lock::{LockService, LockStore};
use crate::proto;
use crate::proto::cache_server::CacheServer;
use crate::proto::lock_server::LockServer;
use crate::proto::pub_sub_server::PubSubServer;
use crate::proto::queue_server::QueueServer;
use crate::proto::stream_server::StreamServer;
use crate::pubsub::PubSubService;
use crate::pubsub::hub::Hub;
use crate::queue::{QueueService, QueueStore};
use crate::redis::embedded::{EmbeddedRedis, StartError};
use crate::redis::{Redis, RedisSettings};
use crate::reload::{self, Reload};
use crate::stream::{StreamService, StreamStore};
use crate::telemetry::metrics::{self, Metrics};
use crate::telemetry::requests::RequestLogLayer;
use crate::tls::{Tls, TlsError};

/// The Redwire services this server serves, registered together with the names
/// health reports on: a service cannot be served without its health entry.
#[derive(Default)]
struct Services {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl Services {
    /// Serves `service` and reports its health under its gRPC name.
    fn add<S>(&mut self, service: S)
    where
        S: Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
    }
}

/// Applies the message size limit to a generated server, both ways.
macro_rules! limited {
    ($server:expr, $max:expr) => {
        $server
            .max_decoding_message_size($max)
            .max_encoding_message_size($max)
    };
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The embedded redis-server could not start.
    #[error(transparent)]
    Embedded(#[from] StartError),
    /// The Redis configuration is unusable.
    #[error("redis: {0}")]
    Redis(#[from] crate::Error),
    /// Server reflection could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The auth file cannot be used.
    #[error(transparent)]
    Auth(#[from] KeyringError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A non-loopback listener without auth and without `--insecure`.
    #[error(
        "refusing to serve {0} without auth: give --auth-file (docs/AUTH.md) or \
         --tls-client-ca, or --insecure when the network is trusted"
    )]
    Insecure(String),
}

/// The sockets Redwire serves on, bound by the caller: the gRPC listener, and
/// the admin HTTP listener if there is one (a bare `TcpListener` is gRPC only).
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC listener.
    pub grpc: TcpListener,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Self { grpc, admin: None }
    }
}

/// Runs Redwire on `listeners` until `shutdown` resolves, then drains within the
/// configured grace period.
pub async fn run(
    config: Config,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Listeners {
        grpc: listener,
        admin: admin_listener,
    } = listeners.into();
    // TLS to Redis uses rustls with ring; an already installed provider stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let auth = config
        .auth_file
        .as_deref()
        .map(Auth::load)
        .transpose()?
        .map(Arc::new);
    let tls = Tls::load(&config.tls)?.map(Arc::new);
    let callers_authenticated =
        auth.is_some() || tls.as_ref().is_some_and(|t| t.verifies_clients());
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
        && !callers_authenticated
        && !config.insecure
    {
        return Err(ServeError::Insecure(addr.to_string()));
    }
    // The metrics name every tenant's queues: beyond loopback they need tokens.
    if let Some(Ok(addr)) = admin_listener.as_ref().map(TcpListener::local_addr)
        && !addr.ip().is_loopback()
        && auth.is_none()
        && !config.insecure
    {
        return Err(ServeError::Insecure(format!("the admin listener {addr}")));
    }
    let embedded = match config.redis_target() {
        RedisTarget::Embedded => {
            Some(EmbeddedRedis::start(&config.redis_server_bin, &config.data_dir).await?)
        }
        _ => None,
    };
    let security = Security { auth, tls };
    let result = serve(
        &config,
        embedded.as_ref().map(EmbeddedRedis::url),
        security,
        Listeners {
            grpc: listener,
            admin: admin_listener,
        },
        shutdown,
    )
    .await;
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    result
}

/// Who may connect and call: the auth file and the listener's TLS, each
/// reloaded from its files while the server runs.
struct Security {
    auth: Option<Arc<Auth>>,
    tls: Option<Arc<Tls>>,
}

impl Security {
    /// What is read again from files while the server runs.
    fn reloadable(&self) -> Vec<Arc<dyn Reload>> {
        let mut items: Vec<Arc<dyn Reload>> = Vec::new();
        if let Some(auth) = &self.auth {
            items.push(auth.clone());
        }
        if let Some(tls) = &self.tls {
            items.push(tls.clone());
        }
        items
    }
}

async fn serve(
    config: &Config,
    embedded_url: Option<&str>,
    security: Security,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Listeners {
        grpc: listener,
        admin: admin_listener,
    } = listeners;
    let metrics = Arc::new(Metrics::new());
    let redis = Arc::new(connect_redis(config, embedded_url)?.with_metrics(metrics.redis.clone()));
    let token = CancellationToken::new();
    let readiness = Arc::new(health::Readiness::new(token.clone()));
    let Redwire {
        services,
        mut background,
        hub,
    } = Redwire::build(config, &redis, &metrics, &token)?;
    let reloadable = security.reloadable();
    if !reloadable.is_empty() {
        background.push(tokio::spawn(reload::watch(reloadable, token.clone())));
    }
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let mut health = Health::new(reporter, &services.names);
    health.set_all(ServingStatus::NotServing).await;
    let mut routes = services.routes;
    routes.add_service(health_service);
    add_reflection(&mut routes)?;

    // Outermost first: the log line sees the status the client sees, a
    // reply-budget refusal included. The console calls through the same stack.
    let layers = tower::ServiceBuilder::new()
        .layer(RequestLogLayer::new(metrics.clone()))
        .layer(ReplyLayer::new(config.reply_buffer_bytes))
        .layer(AuthLayer::new(security.auth.clone()));
    let routes = routes.routes();
    // The admin listener outlives the drain (so /readyz says why), and stops last.
    let admin_stop = CancellationToken::new();
    let admin_task = admin_listener.map(|admin_listener| {
        let sampled = metrics::Sampled {
            queues: QueueStore::new(redis.clone()),
            streams: StreamStore::new(redis.clone()),
            max_queues: config.admin.max_queues,
            max_streams: config.admin.max_streams,
        };
        background.push(tokio::spawn(metrics::sample(
            metrics.clone(),
            sampled,
            config.admin.interval,
            token.clone(),
        )));
        let admin = Arc::new(Admin {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            auth: security.auth.clone(),
            // The console calls the routes in process, through the same layers.
            console: Console::new(
                BoxCloneSyncService::new(
                    tower::ServiceBuilder::new()
                        .map_response(|response: http::Response<_>| {
                            response.map(tonic::body::Body::new)
                        })
                        .layer(layers.clone())
                        .service(routes.clone()),
                ),
                security.auth.is_some(),
                config.limits.max_batch,
            ),
        });
        tokio::spawn(admin::serve(admin_listener, admin, admin_stop.clone()))
    });

    let pubsub_connection = health::OwnConnection {
        service: PubSubServer::<PubSubService>::NAME,
        is_up: Box::new(move || hub.is_live()),
    };
    background.push(tokio::spawn(health::watch_redis(
        redis.clone(),
        health.clone(),
        readiness,
        config.health_interval,
        vec![pubsub_connection],
        token.clone(),
    )));

    let tls = security.tls.is_some();
    let local_addr = listener
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |addr| addr.to_string());
    let connections = config.connections;
    let server = Server::builder()
        .max_concurrent_streams(Some(connections.max_concurrent_streams))
        // Pings close connections whose peer is gone, streams in flight or not.
        .http2_keepalive_interval(Some(connections.keepalive_interval))
        .http2_keepalive_timeout(Some(connections.keepalive_timeout))
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            connection::incoming(listener, connections, security.tls),
            token.clone().cancelled_owned(),
        );
    tracing::info!(addr = %local_addr, tls, cluster = redis.is_cluster(), "redwire listening");
    let result = run_until_shutdown(
        server,
        shutdown,
        config.shutdown_grace,
        &mut health,
        &token,
        background,
    )
    .await;
    admin_stop.cancel();
    if let Some(admin_task) = admin_task {
        let _ = admin_task.await;
    }
    tracing::info!("redwire stopped");
    Ok(result?)
}

/// The Redis handle for the configured target (the embedded server's when
/// Redwire runs its own).
fn connect_redis(config: &Config, embedded_url: Option<&str>) -> crate::Result<Redis> {
    let settings = config.redis.clone();
    match (config.redis_target(), embedded_url) {
        (RedisTarget::Cluster(seeds), _) => Redis::cluster(&seeds, settings),
        (RedisTarget::Standalone(url), _) => Redis::standalone(&url, settings),
        (RedisTarget::Embedded, Some(url)) => Redis::standalone(url, settings),
        (RedisTarget::Embedded, None) => {
            Err(crate::Error::Internal("embedded redis has no url".into()))
        }
    }
}

/// The Lock service's store: on the main Redis, or by majority over the
/// `--lock-redlock` servers.
fn lock_store(config: &Config, redis: &Arc<Redis>) -> crate::Result<LockStore> {
    if config.lock_redlock.is_empty() {
        return Ok(LockStore::single(redis.clone()));
    }
    let nodes = config
        .lock_redlock
        .iter()
        .map(|url| {
            // Redlock servers are independent and usually have no replicas:
            // a grant's safety comes from the majority, not from WAIT.
            let settings = RedisSettings {
                durable_replicas: 0,
                ..config.redis.clone()
            };
            Redis::standalone(url, settings)
                .map(|node| Arc::new(node.with_metrics(redis.metrics().clone())))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(LockStore::redlock(redis.clone(), nodes))
}

/// Adds server reflection, both protocol versions (grpcurl and older tools use
/// v1alpha), over Redwire's and the health service's descriptors.
fn add_reflection(routes: &mut RoutesBuilder) -> Result<(), tonic_reflection::server::Error> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes
        .add_service(builder().build_v1()?)
        .add_service(builder().build_v1alpha()?);
    Ok(())
}

/// The five services, ready to serve, and the background tasks they need.
struct Redwire {
    services: Services,
    background: Vec<JoinHandle<()>>,
    /// The shared pub/sub connection, whose liveness PubSub's health follows.
    hub: Arc<Hub>,
}

impl Redwire {
    /// Builds every service on `redis` with the config's limits, counting in
    /// `metrics`; `token` ends their streams and background tasks.
    fn build(
        config: &Config,
        redis: &Arc<Redis>,
        metrics: &Arc<Metrics>,
        token: &CancellationToken,
    ) -> crate::Result<Self> {
        let limits = config.limits;
        let heartbeat = config.heartbeat;
        let (hub, hub_task) = Hub::start(redis.clone(), token.clone());
        let cache = CacheService::new(
            CacheStore::new(redis.clone(), config.max_message_bytes),
            limits,
            token.clone(),
        );
        let queue = QueueService::new(
            QueueStore::new(redis.clone()),
            limits,
            config.queue,
            heartbeat,
            token.clone(),
        );
        let pubsub = PubSubService::new(
            redis.clone(),
            hub.clone(),
            limits,
            config.pubsub,
            heartbeat,
            metrics.clone(),
            token.clone(),
        );
        let lock = LockService::new(
            lock_store(config, redis)?,
            limits,
            heartbeat,
            metrics.clone(),
            token.clone(),
        );
        let stream = StreamService::new(
            StreamStore::new(redis.clone()),
            limits,
            heartbeat,
            token.clone(),
        );
        let mut background = queue.spawn_background(hub.clone());
        background.push(hub_task);
        background.push(lock.spawn_background(hub.clone()));

        let max = config.max_message_bytes;
        let mut services = Services::default();
        services.add(limited!(CacheServer::new(cache), max));
        services.add(limited!(QueueServer::new(queue), max));
        services.add(limited!(PubSubServer::new(pubsub), max));
        services.add(limited!(LockServer::new(lock), max));
        services.add(limited!(StreamServer::new(stream), max));
        Ok(Self {
            services,
            background,
            hub,
        })
    }
}

/// Serves until `server` ends or `shutdown` resolves, then runs the shutdown
/// sequence: health NOT_SERVING, `token` fires, in-flight calls and background
/// tasks drain, all within `grace`.
async fn run_until_shutdown<E>(
    server: impl Future<Output = Result<(), E>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    health: &mut Health,
    token: &CancellationToken,
    mut background: Vec<JoinHandle<()>>,
) -> Result<(), E> {
    tokio::pin!(server);
    let (result, grace_ends) = tokio::select! {
        result = &mut server => (result, Instant::now() + grace),
        () = shutdown => {
            let grace_ends = Instant::now() + grace;
            tracing::info!(grace = %humantime::format_duration(grace), "shutting down");
            // The health watcher is the last task pushed: stop it first so it
            // cannot flip the status back to SERVING.
            if let Some(watcher) = background.last() {
                watcher.abort();
            }
            health.set_all(ServingStatus::NotServing).await;
            token.cancel();
            health.close_watchers().await;
            let result = match tokio::time::timeout_at(grace_ends, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("shutdown grace elapsed; closing the remaining connections");
                    Ok(())
                }
            };
            (result, grace_ends)
        }
    };
    token.cancel();
    // Background tasks stop with the token; one waiting on a Redis that does not
    // answer is cut off when the grace ends, so the grace bounds the whole exit.
    let joined = futures::future::join_all(background.iter_mut());
    if tokio::time::timeout_at(grace_ends, joined).await.is_err() {
        tracing::warn!("background tasks still busy when the grace ended; stopping them");
        for task in &background {
            task.abort();
        }
    }
    result
}
