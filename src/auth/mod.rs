//! Who may call what: bearer tokens from the auth file, each with grants of
//! services and action classes, checked once per call by one tower layer
//! ([`AuthLayer`]) before any handler runs.
//!
//! - A call carries `authorization: Bearer <token>` metadata, or comes on an
//!   mTLS connection whose client certificate has a name the file lists under
//!   `[[clients]]` (a token, when sent, takes precedence). Neither, or a token the
//!   file does not list (or an expired one), is `UNAUTHENTICATED`; a principal
//!   without a grant for the rpc's [`Permission`] is `PERMISSION_DENIED` naming
//!   it (`queue:admin`), with `ErrorInfo` reason `PERMISSION_DENIED` and the
//!   permission in its metadata.
//! - A principal acts in one tenant (the default tenant's keys are today's keys):
//!   the layer puts the call's [`Scope`] into its extensions, and handlers
//!   qualify every name through it, which also checks the grants' name patterns
//!   (deny wins) and writes the audit lines.
//! - A tenant's quota ([`quota`]) is checked here: calls per second, and the
//!   largest request message (the body is read through [`PayloadLimit`]).
//! - Health and reflection stay open ([`permissions::is_open`]).
//! - The file is read again when it changes and on SIGHUP ([`crate::reload`]);
//!   a file that does not parse is logged and the previous version stays.
//! - Admin calls are logged at info on target `redwire::audit` with the
//!   principal, the tenant, the method and each name the call reports.
//! - A long-lived stream is checked again whenever the file is reloaded and
//!   when its token expires ([`revocation`]): one whose token was removed or
//!   expired ends `UNAUTHENTICATED`, one whose grants no longer cover the rpc
//!   ends `PERMISSION_DENIED`.
//!
//! Without `--auth-file` every call is allowed, and Redwire only listens on a
//! loopback address unless `--insecure` says otherwise.

pub mod keyring;
pub mod permissions;
pub mod quota;
pub mod revocation;
pub mod scope;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use tonic::Status;
use tonic::codegen::{Service, http};

use std::pin::Pin;

use crate::connection::ClientInfo;
use crate::error::{Error, Reason};
use crate::reload::{Reload, WatchedFiles};
pub use keyring::{Keyring, KeyringError, Principal};
pub use permissions::{Action, Permission};
pub use quota::{PayloadLimit, Quota, Tenant};
pub use revocation::Revocable;
use revocation::Watch;
pub use scope::Scope;

/// The tokens in force, reloaded from their file.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    file: WatchedFiles,
    keyring: RwLock<Arc<Keyring>>,
    /// Bumped on every reload that took effect, so open streams check again.
    reloads: tokio::sync::watch::Sender<()>,
}

/// How a call proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token, by its SHA-256.
    Token([u8; 32]),
    /// The names of a verified client certificate.
    Client(Vec<String>),
}

/// Who a call acts as, how it proved it, and what it needs: enough to check it
/// again later.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The auth file's entry.
    pub principal: Arc<Principal>,
    credential: Credential,
    /// The rpc's permission (None for a path no rpc has).
    permission: Option<Permission>,
}

impl Auth {
    /// Loads the auth file at `path`; fails when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let file = WatchedFiles::new(vec![path.to_owned()]);
        let keyring = Keyring::load(path)?;
        tracing::info!(file = %path.display(), entries = keyring.len(), "auth file loaded");
        Ok(Self {
            path: path.to_owned(),
            file,
            keyring: RwLock::new(Arc::new(keyring)),
            reloads: tokio::sync::watch::Sender::new(()),
        })
    }

    /// The principal a call with these headers, on a connection whose client
    /// certificate has `client_names`, acts as when it may call `path`, with
    /// the scope of names it may touch; the status to refuse it with otherwise
    /// (also when its tenant is over its rate). Open paths need no principal.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        client_names: &[String],
    ) -> Result<Option<(Caller, Scope)>, Error> {
        if permissions::is_open(path) {
            return Ok(None);
        }
        let credential = match bearer_token(headers) {
            Some(token) => Credential::Token(keyring::sha256(token)),
            None => Credential::Client(client_names.to_vec()),
        };
        let permission = permissions::permission_of(path);
        let principal = self.authorize(&credential, permission)?;
        if let Some(tenant) = &principal.tenant {
            tenant.admit()?;
        }
        let names = permission.and_then(|p| principal.names_for(p));
        let admin = permission
            .is_some_and(|p| p.action == Action::Admin)
            .then_some((principal.name.as_str(), path));
        let scope = Scope::new(principal.tenant.clone(), names, admin);
        let caller = Caller {
            principal,
            credential,
            permission,
        };
        Ok(Some((caller, scope)))
    }

    /// Checks a request to the admin listener's `/metrics`: it needs a valid
    /// token of the default tenant (metrics show every tenant's names).
    pub fn check_operator(&self, headers: &http::HeaderMap) -> Result<(), Error> {
        let token = bearer_token(headers).ok_or_else(|| missing_credentials(&[]))?;
        let principal = self.authorize(&Credential::Token(keyring::sha256(token)), None)?;
        match &principal.tenant {
            None => Ok(()),
            Some(tenant) => Err(Error::refused(
                Reason::PermissionDenied,
                format!(
                    "token {} acts in tenant {}; the metrics show every tenant's queues, so they need a token of the default tenant",
                    principal.name, tenant.name
                ),
            )),
        }
    }

    /// The principal `credential` names in the file in force, if it is valid
    /// and allows `permission`.
    fn authorize(
        &self,
        credential: &Credential,
        permission: Option<Permission>,
    ) -> Result<Arc<Principal>, Error> {
        let keyring = self.keyring();
        let principal = match credential {
            Credential::Token(hash) => keyring.find_hash(hash).ok_or_else(|| {
                Error::refused(Reason::Unauthenticated, "unknown or revoked token")
            })?,
            Credential::Client(names) => keyring
                .find_client(names)
                .ok_or_else(|| missing_credentials(names))?,
        };
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
        if let Some(permission) = permission
            && !principal.allows(permission)
        {
            return Err(Error::refused(
                Reason::PermissionDenied,
                format!("token {} lacks the permission {permission}", principal.name),
            )
            .with("permission", permission));
        }
        Ok(Arc::clone(principal))
    }

    /// Checks `caller` against the file in force now: the refusal a call of
    /// theirs would get, if any.
    pub fn recheck(&self, caller: &Caller) -> Result<(), Error> {
        self.authorize(&caller.credential, caller.permission)
            .map(drop)
    }

    /// Changes whenever a reload takes effect.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<()> {
        self.reloads.subscribe()
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Reload for Auth {
    fn reload(&self, force: bool) {
        if !self.file.changed(force) {
            return;
        }
        match Keyring::load(&self.path) {
            Ok(keyring) => {
                tracing::info!(file = %self.path.display(), entries = keyring.len(), "auth file reloaded");
                *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
                self.reloads.send_replace(());
            }
            Err(e) => {
                tracing::error!(error = %e, "auth file not reloaded; the previous version stays")
            }
        }
    }
}

/// The refusal of a call with neither a token nor a listed client certificate.
fn missing_credentials(client_names: &[String]) -> Error {
    let mut message = "missing token: send metadata `authorization: Bearer <token>`".to_owned();
    if !client_names.is_empty() {
        message.push_str(&format!(
            " (no [[clients]] entry of the auth file names the client certificate's {client_names:?})"
        ));
    }
    Error::refused(Reason::Unauthenticated, message)
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

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for AuthService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<Revocable<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(auth) = &self.auth else {
            return ResponseFuture::called(self.inner.call(request), None);
        };
        let client_names = request
            .extensions()
            .get::<ClientInfo>()
            .map_or(&[][..], |info| info.client_names.get());
        match auth.check(request.uri().path(), request.headers(), client_names) {
            Ok(None) => ResponseFuture::called(self.inner.call(request), None),
            Ok(Some((caller, scope))) => {
                if let Some(tenant) = &caller.principal.tenant
                    && tenant.quota.max_payload_bytes.is_some()
                {
                    let tenant = tenant.clone();
                    request =
                        request.map(|body| tonic::body::Body::new(PayloadLimit::new(body, tenant)));
                }
                request.extensions_mut().insert(scope);
                let watch = Watch::new(auth.clone(), caller);
                ResponseFuture::called(self.inner.call(request), Some(watch))
            }
            Err(e) => ResponseFuture::Refused {
                response: Some(Status::from(e).into_http::<ResBody>()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`AuthService`]: the handler's, its body ended early if
    /// its watch finds the caller revoked, or a refusal. No allocation per call.
    /// (The macro takes no field docs: a variant's fields are what it says.)
    #[allow(missing_docs)]
    #[project = ResponseProjection]
    pub enum ResponseFuture<F, B> {
        /// The handler runs.
        Called {
            #[pin]
            handler: F,
            watch: Option<Watch>,
        },
        /// The call was refused before any handler ran.
        Refused {
            response: Option<http::Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn called(handler: F, watch: Option<Watch>) -> Self {
        Self::Called { handler, watch }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Revocable<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseProjection::Called { handler, watch } => {
                let response = std::task::ready!(handler.poll(cx))?;
                let watch = watch.take();
                Poll::Ready(Ok(response.map(|body| Revocable::new(body, watch))))
            }
            ResponseProjection::Refused { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(|body| Revocable::new(body, None))))
            }
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
        assert!(auth.check(get, &bearer(&token_of(&first)), &[]).is_ok());
        assert!(auth.check(get, &bearer("rw_unknown"), &[]).is_err());

        let second = block("second");
        std::fs::write(&path, &second).expect("write");
        auth.reload(true);
        assert!(
            auth.check(get, &bearer(&token_of(&first)), &[]).is_err(),
            "revoked"
        );
        assert!(auth.check(get, &bearer(&token_of(&second)), &[]).is_ok());

        std::fs::write(&path, "this is not toml [").expect("write");
        auth.reload(true);
        let kept = auth.check(get, &bearer(&token_of(&second)), &[]);
        let (caller, _) = kept.expect("still in force").expect("a caller");
        assert_eq!(caller.principal.name, "second");
    }
}
