//! Who may call what: bearer tokens from the auth file, each with grants of
//! services and action classes, checked once per call by one tower layer
//! ([`AuthLayer`]) before any handler runs.
//!
//! - A call carries `authorization: Bearer <token>` metadata. No token or one the
//!   file does not list (or an expired one) is `UNAUTHENTICATED`; a token
//!   without a grant for the rpc's [`Permission`] is `PERMISSION_DENIED` naming
//!   it (`queue:admin`), with `ErrorInfo` reason `PERMISSION_DENIED` and the
//!   permission in its metadata.
//! - Health and reflection stay open ([`permissions::is_open`]).
//! - The file is read again when it changes (checked every second) and on
//!   SIGHUP; a file that does not parse is logged and the previous version stays.
//! - Admin calls are logged at info on target `redwire::audit` with the
//!   principal and the method.
//!
//! Without `--auth-file` every call is allowed, and Redwire only listens on a
//! loopback address unless `--insecure` says otherwise.

pub mod keyring;
pub mod permissions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::{Either, Ready, ready};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::{Service, http};

use crate::error::{Error, Reason};
pub use keyring::{Keyring, KeyringError, Principal};
pub use permissions::{Action, Permission};

/// How often the auth file's modification time is checked.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The tokens in force, reloaded from their file.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    keyring: RwLock<Arc<Keyring>>,
    /// Modification time and length of the version loaded.
    loaded: RwLock<Option<(SystemTime, u64)>>,
}

impl Auth {
    /// Loads the auth file at `path`; fails when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let stamp = file_stamp(path);
        let keyring = Keyring::load(path)?;
        tracing::info!(file = %path.display(), tokens = keyring.len(), "auth file loaded");
        Ok(Self {
            path: path.to_owned(),
            keyring: RwLock::new(Arc::new(keyring)),
            loaded: RwLock::new(stamp),
        })
    }

    /// The principal a call with these headers acts as, when it may call
    /// `path`; the status to refuse it with otherwise. Open paths need no token
    /// and have no principal.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<Principal>>, Error> {
        if permissions::is_open(path) {
            return Ok(None);
        }
        let token = bearer_token(headers).ok_or_else(|| {
            Error::refused(
                Reason::Unauthenticated,
                "missing token: send metadata `authorization: Bearer <token>`",
            )
        })?;
        let keyring = self.keyring();
        let principal = keyring
            .find(token)
            .ok_or_else(|| Error::refused(Reason::Unauthenticated, "unknown or revoked token"))?;
        if principal
            .expires()
            .is_some_and(|at| at <= SystemTime::now())
        {
            return Err(Error::refused(
                Reason::Unauthenticated,
                format!("token {} has expired", principal.name),
            ));
        }
        // A path no rpc has is left to the router (UNIMPLEMENTED).
        if let Some(permission) = permissions::permission_of(path) {
            if !principal.allows(permission) {
                return Err(Error::refused(
                    Reason::PermissionDenied,
                    format!("token {} lacks the permission {permission}", principal.name),
                )
                .with("permission", permission));
            }
            if permission.action == Action::Admin {
                tracing::info!(target: "redwire::audit", principal = %principal.name, method = path, "admin call");
            }
        }
        Ok(Some(Arc::clone(principal)))
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads the file again if it changed since the last load (or `force`);
    /// a version that does not parse is logged and ignored.
    pub fn reload(&self, force: bool) {
        let stamp = file_stamp(&self.path);
        let mut loaded = self.loaded.write().unwrap_or_else(PoisonError::into_inner);
        if !force && stamp == *loaded {
            return;
        }
        *loaded = stamp;
        match Keyring::load(&self.path) {
            Ok(keyring) => {
                tracing::info!(file = %self.path.display(), tokens = keyring.len(), "auth file reloaded");
                *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
            }
            Err(e) => {
                tracing::error!(error = %e, "auth file not reloaded; the previous version stays")
            }
        }
    }

    /// Reloads the file when it changes and on SIGHUP, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(RELOAD_CHECK);
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(signals) => signals.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticks.tick() => self.reload(false),
                _ = hangup => self.reload(true),
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// The file's modification time and length, to notice a change.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The tower layer that checks every call against [`Auth`]; without one
/// (no `--auth-file`) it lets everything through.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    auth: Option<Arc<Auth>>,
}

impl AuthLayer {
    /// Checks calls against `auth`, or lets everything through when None.
    pub fn new(auth: Option<Arc<Auth>>) -> Self {
        Self { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some(auth) = &self.auth else {
            return Either::Left(self.inner.call(request));
        };
        match auth.check(request.uri().path(), request.headers()) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Either::Left(self.inner.call(request))
            }
            Err(e) => Either::Right(ready(Ok(Status::from(e).into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("header");
        headers.insert(http::header::AUTHORIZATION, value);
        headers
    }

    /// A reload reads a changed file at once; a version that does not parse
    /// leaves the tokens of the last good one in force.
    #[test]
    fn a_broken_file_keeps_the_previous_tokens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("auth.toml");
        let block = |name: &str| {
            keyring::mint_block(name, &["cache".into()], &["read".into()]).expect("block")
        };
        let token_of = |block: &str| {
            let line = block.lines().next().expect("token line");
            line.strip_prefix("# token: ").expect("token").to_owned()
        };
        let get = "/redwire.v1.Cache/Get";
        let first = block("first");
        std::fs::write(&path, &first).expect("write");
        let auth = Auth::load(&path).expect("loads");
        assert!(auth.check(get, &bearer(&token_of(&first))).is_ok());

        let second = block("second");
        std::fs::write(&path, &second).expect("write");
        auth.reload(true);
        assert!(
            auth.check(get, &bearer(&token_of(&first))).is_err(),
            "revoked"
        );
        assert!(auth.check(get, &bearer(&token_of(&second))).is_ok());

        std::fs::write(&path, "this is not toml [").expect("write");
        auth.reload(true);
        let kept = auth.check(get, &bearer(&token_of(&second)));
        let principal = kept.expect("still in force").expect("a principal");
        assert_eq!(principal.name, "second");
    }
}
