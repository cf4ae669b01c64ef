//! `redwire.v1.Lock`: leases with fencing tokens, fair waiting without polling,
//! renewal, a held-lock stream for leader election, and a Redlock quorum mode.
//!
//! Keys per resource (one hash tag; a tenant's start `rw:<tenant>/l:`, see
//! `crate::redis::keys`): `rw:l:{r}:owner` (token and fencing token,
//! expiring with the lease), `rw:l:{r}:fence` (the counter, never expires),
//! `rw:l:{r}:waiters` (who waits, for Describe). Scripts: `acquire.lua` (grant and
//! fencing token in one atomic step; idempotent for the same token),
//! `release.lua`, `extend.lua`, `describe.lua`, `raise_fence.lua` (Redlock).
//! One index for all resources, `rw:l:held:{index}:*` on the main Redis, lists
//! the held locks for ListLocks (`held.lua`, kept in batches in the background,
//! see `index`).
//!
//! Waiting: waiters of a resource in one process line up in a fair (FIFO) local
//! mutex, and only the first of them talks to Redis. It sleeps until the lock is
//! released (a wake-up on `rw:l:wake` through the pub/sub hub) or its lease runs
//! out (a timer at the holder's remaining ttl), never in a polling loop, and holds
//! no Redis connection while it sleeps.

mod index;
mod store;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::try_join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use store::WAITER_REFRESH;
pub use store::{Attempt, LockState, LockStore};

use crate::auth::Scope;
use crate::deadline;
use crate::error::{Error, Reason, Result};
use crate::heartbeat;
use crate::named::Named;
use crate::page::{self, Page};
use crate::proto::lock_server::Lock;
use crate::proto::*;
use crate::pubsub::hub::Hub;
use crate::redis::keys::LOCK_WAKE_CHANNEL;
use crate::telemetry::metrics::Metrics;
use crate::time::proto_duration;
use crate::validate::{self, Limits};
use crate::waker::Waker;

/// Shortest ttl a Hold may use (it renews at a third of it).
const MIN_HOLD_TTL: Duration = Duration::from_millis(100);

/// A granted lease.
#[derive(Debug, Clone)]
struct Grant {
    token: String,
    fence: u64,
    /// When the lease ends at the earliest (see [`Attempt::Granted`]).
    expires_at: SystemTime,
}

impl Grant {
    fn response(&self) -> AcquireResponse {
        AcquireResponse {
            acquired: true,
            token: self.token.clone(),
            fencing_token: self.fence,
            expire_time: Some(self.expires_at.into()),
        }
    }
}

/// The Lock service.
#[derive(Debug, Clone)]
pub struct LockService {
    store: LockStore,
    limits: Limits,
    waker: Arc<Waker>,
    /// Per resource, the fair line of local waiters.
    lines: Arc<Named<tokio::sync::Mutex<()>>>,
    /// Heartbeat interval of Hold streams that ask for none.
    heartbeat: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl LockService {
    /// A Lock service over `store` whose Hold streams get a heartbeat after
    /// `heartbeat` of silence unless they ask otherwise, counting grants, waits
    /// and lost holds in `metrics`; call [`LockService::spawn_background`].
    pub fn new(
        store: LockStore,
        limits: Limits,
        heartbeat: Duration,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            limits,
            waker: Arc::new(Waker::new(LOCK_WAKE_CHANNEL)),
            lines: Arc::default(),
            heartbeat,
            metrics,
            shutdown,
        }
    }

    /// Starts listening for released locks through the pub/sub hub.
    pub fn spawn_background(&self, hub: Arc<Hub>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.waker.clone().run(hub, self.shutdown.clone()))
    }

    /// Acquires `resource` for `token`, waiting until `until`; None when it stayed held.
    ///
    /// A caller that waits counts as a waiter in Redis (for Describe, on every
    /// instance) from its first try until it is granted or gives up.
    async fn obtain(
        &self,
        resource: &str,
        token: &str,
        ttl: Duration,
        until: Instant,
    ) -> Result<Option<Grant>> {
        let waits = Instant::now() < until;
        match self
            .store
            .acquire(resource, token, ttl, waits.then_some(token))
            .await?
        {
            Attempt::Granted { fence, expires_at } => {
                self.metrics.lock_granted();
                return Ok(Some(grant(token, fence, expires_at)));
            }
            Attempt::Held(_) if !waits => return Ok(None),
            Attempt::Held(_) => {}
        }
        let _waiting = self.metrics.lock_waiter();
        let result = tokio::select! {
            result = self.wait_for(resource, token, ttl, until) => result,
            never = self.stay_counted(resource, token) => match never {},
        };
        if matches!(result, Ok(Some(_))) {
            self.metrics.lock_granted();
        } else {
            // Off the reply's path: the caller's deadline may be close, and the
            // presence expires by itself should this fail.
            let (store, resource, token) =
                (self.store.clone(), resource.to_owned(), token.to_owned());
            tokio::spawn(async move { store.forget_waiter(&resource, &token).await });
        }
        result
    }

    /// Waits for `resource` behind earlier local waiters, then tries again each
    /// time it may have become free, until `until`.
    async fn wait_for(
        &self,
        resource: &str,
        token: &str,
        ttl: Duration,
        until: Instant,
    ) -> Result<Option<Grant>> {
        // Line up behind earlier local waiters (tokio's mutex is fair).
        let line = self.lines.get_or_default(resource);
        let _turn = tokio::select! {
            turn = tokio::time::timeout_at(until, line.lock()) => match turn {
                Ok(turn) => turn,
                Err(_) => return Ok(None),
            },
            () = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
        };
        let signal = self.waker.signal(resource);
        loop {
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self
                .store
                .acquire(resource, token, ttl, Some(token))
                .await?
            {
                Attempt::Granted { fence, expires_at } => {
                    return Ok(Some(grant(token, fence, expires_at)));
                }
                Attempt::Held(left) => {
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                    // Woken by a release, or when the holder's lease runs out.
                    let expiry = (Instant::now() + left + Duration::from_millis(1)).min(until);
                    tokio::select! {
                        () = &mut woken => {}
                        () = tokio::time::sleep_until(expiry) => {}
                        () = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
                    }
                }
            }
        }
    }

    /// Keeps `ticket` counted as a waiter; runs until dropped.
    async fn stay_counted(&self, resource: &str, ticket: &str) -> Infallible {
        loop {
            tokio::time::sleep(WAITER_REFRESH).await;
            self.store.keep_waiting(resource, ticket).await;
        }
    }
}

fn grant(token: &str, fence: u64, expires_at: SystemTime) -> Grant {
    Grant {
        token: token.to_owned(),
        fence,
        expires_at,
    }
}

fn token(lease_id: &str) -> Result<String> {
    if lease_id.is_empty() {
        Ok(crate::token::unguessable())
    } else {
        validate::name("lease_id", lease_id)?;
        Ok(lease_id.to_owned())
    }
}

fn required_ttl(field: &str, ttl: Option<&prost_types::Duration>) -> Result<Duration> {
    validate::required(field, validate::ttl(field, ttl)?)
}

fn not_holder(resource: &str) -> Error {
    Error::refused(
        Reason::LockNotHeld,
        format!(
            "lock {resource:?} is not held with this token (it was released, expired or taken over)"
        ),
    )
    .with("resource", resource)
}

/// The stream type of Hold.
pub type HoldStream = heartbeat::Heartbeats<
    ReceiverStream<std::result::Result<HoldResponse, Status>>,
    fn() -> std::result::Result<HoldResponse, Status>,
>;

#[tonic::async_trait]
impl Lock for LockService {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let deadline = deadline::remaining(request.metadata());
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let resource = scope.name("resource", &req.resource)?;
        let ttl = required_ttl("ttl", req.ttl.as_ref())?;
        let wait = validate::duration("wait", req.wait.as_ref())?.unwrap_or_default();
        let token = token(&req.lease_id)?;
        let until = Instant::now() + deadline::own_wait(wait, deadline);
        let grant = self.obtain(&resource, &token, ttl, until).await?;
        Ok(Response::new(
            grant.map_or_else(AcquireResponse::default, |g| g.response()),
        ))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let resource = scope.name("resource", &req.resource)?;
        if !self.store.release(&resource, &req.token).await? {
            return Err(not_holder(&req.resource).into());
        }
        Ok(Response::new(ReleaseResponse {}))
    }

    async fn extend(
        &self,
        request: Request<ExtendRequest>,
    ) -> Result<Response<ExtendResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let resource = scope.name("resource", &req.resource)?;
        let ttl = required_ttl("ttl", req.ttl.as_ref())?;
        let expires_at = self
            .store
            .extend(&resource, &req.token, ttl)
            .await?
            .ok_or_else(|| not_holder(&req.resource))?;
        Ok(Response::new(ExtendResponse {
            expire_time: Some(expires_at.into()),
        }))
    }

    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        let scope = Scope::of(&request);
        let resource = request.into_inner().resource;
        let resource = scope.name("resource", &resource)?;
        let state = self.store.describe(&resource).await?;
        Ok(Response::new(DescribeResponse {
            held: state.held,
            ttl: state.ttl.map(proto_duration),
            fencing_token: state.fence,
            waiters: state.waiters,
        }))
    }

    async fn list_locks(
        &self,
        request: Request<ListLocksRequest>,
    ) -> Result<Response<ListLocksResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let page = Page::of(&self.limits, req.page_size, &req.page_token)?;
        let held = self.store.held().await?;
        let mut resources: Vec<(String, String)> = held
            .into_iter()
            .filter_map(|qualified| Some((scope.listed(&qualified)?, qualified)))
            .collect();
        resources.sort();
        let (resources, more) = page::slice(
            resources,
            |(name, _)| name.as_str(),
            page.after.as_deref(),
            page.size,
        );
        let states = try_join_all(
            resources
                .iter()
                .map(|(_, qualified)| self.store.describe(qualified)),
        )
        .await?;
        let next_page_token =
            page::next_token(resources.last().map(|(name, _)| name.as_str()), more);
        let locks = resources
            .into_iter()
            .zip(states)
            .filter(|(_, state)| state.held)
            .map(|((resource, _), state)| HeldLock {
                resource,
                ttl: state.ttl.map(proto_duration),
                fencing_token: state.fence,
                waiters: state.waiters,
            })
            .collect();
        Ok(Response::new(ListLocksResponse {
            locks,
            next_page_token,
        }))
    }

    type HoldStream = HoldStream;

    async fn hold(
        &self,
        request: Request<HoldRequest>,
    ) -> Result<Response<Self::HoldStream>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let resource = scope.name("resource", &req.resource)?.into_owned();
        let ttl = validate::at_least("ttl", req.ttl.as_ref(), MIN_HOLD_TTL)?;
        let ttl = validate::required("ttl", ttl)?;
        let wait = validate::duration("wait", req.wait.as_ref())?;
        let heartbeat = heartbeat::interval(
            "heartbeat_interval",
            req.heartbeat_interval.as_ref(),
            self.heartbeat,
        )?;
        let until = Instant::now() + wait.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let (tx, rx) = mpsc::channel(8);
        let service = self.clone();
        tokio::spawn(async move {
            if let Some(status) = hold(&service, &resource, ttl, until, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(heartbeat::every(
            heartbeat,
            ReceiverStream::new(rx),
            hold_heartbeat,
        )))
    }
}

fn hold_heartbeat() -> std::result::Result<HoldResponse, Status> {
    Ok(HoldResponse {
        event: Some(hold_response::Event::Heartbeat(heartbeat::now())),
    })
}

/// Runs one Hold stream; returns a status to end with, or None.
async fn hold(
    service: &LockService,
    resource: &str,
    ttl: Duration,
    until: Instant,
    tx: &mpsc::Sender<std::result::Result<HoldResponse, Status>>,
) -> Option<Status> {
    let send = |event| async move {
        tx.send(Ok(HoldResponse { event: Some(event) }))
            .await
            .is_ok()
    };
    let token = crate::token::unguessable();
    let grant = tokio::select! {
        grant = service.obtain(resource, &token, ttl, until) => match grant {
            Ok(Some(grant)) => grant,
            Ok(None) => {
                send(hold_response::Event::NotAcquired(true)).await;
                return None;
            }
            Err(e) => return Some(e.into()),
        },
        () = tx.closed() => return None,
    };
    // From here on the lock is ours: every exit must release it or report it lost.
    if !send(hold_response::Event::Granted(grant.response())).await {
        let _ = service.store.release(resource, &token).await;
        return None;
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(ttl / 3) => {
                match service.store.extend(resource, &token, ttl).await {
                    Ok(Some(expires_at)) => {
                        let renewed = Renewed { expire_time: Some(expires_at.into()) };
                        if !send(hold_response::Event::Renewed(renewed)).await {
                            let _ = service.store.release(resource, &token).await;
                            return None;
                        }
                    }
                    Ok(None) => {
                        service.metrics.lock_hold_lost();
                        send(hold_response::Event::Lost("the lease expired or was taken over".into())).await;
                        return None;
                    }
                    Err(e) => {
                        service.metrics.lock_hold_lost();
                        send(hold_response::Event::Lost(format!("renewal failed: {e}"))).await;
                        return None;
                    }
                }
            }
            () = tx.closed() => {
                let _ = service.store.release(resource, &token).await;
                return None;
            }
            () = service.shutdown.cancelled() => {
                let _ = service.store.release(resource, &token).await;
                return Some(Error::ShuttingDown.into());
            }
        }
    }
}
