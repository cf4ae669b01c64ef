//! TLS on the gRPC listener (rustls): a certificate chain and key, and with
//! `--tls-client-ca` client certificates that CA signed are required (mTLS).
//!
//! The files are read again when they change (see [`crate::reload`]): new
//! connections get the new certificate, open ones keep theirs and are not
//! dropped. A set that cannot be used (unreadable, a key that does not match the
//! certificate) is logged and the previous one stays.
//!
//! A verified client certificate's subject alternative names (DNS and URI) are
//! the connection's [`ClientNames`]; the auth file can grant to them like to a
//! token (`[[clients]]`, docs/AUTH.md).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;

use crate::reload::{Reload, WatchedFiles};

/// TLS flags of the gRPC listener.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsSettings {
    /// Serve gRPC over TLS with this PEM certificate chain (leaf first); re-read
    /// when it changes.
    #[arg(
        long,
        env = "REDWIRE_TLS_CERT",
        value_name = "PEM_FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert; re-read when it changes.
    #[arg(
        long,
        env = "REDWIRE_TLS_KEY",
        value_name = "PEM_FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by a CA in this PEM bundle (mTLS); a
    /// client without one is refused in the handshake. Re-read when it changes.
    #[arg(
        long,
        env = "REDWIRE_TLS_CLIENT_CA",
        value_name = "PEM_FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

/// Why a TLS file set cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

/// The listener's TLS configuration in force, reloaded from its files.
#[derive(Debug)]
pub struct Tls {
    settings: TlsSettings,
    files: WatchedFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the configured files; None when TLS is not configured.
    pub fn load(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
            return Ok(None);
        };
        let mut paths = vec![cert.clone(), key.clone()];
        paths.extend(settings.tls_client_ca.clone());
        let files = WatchedFiles::new(paths);
        let config = server_config(settings)?;
        tracing::info!(
            cert = %cert.display(),
            client_certificates = settings.tls_client_ca.is_some(),
            "tls on the grpc listener"
        );
        Ok(Some(Self {
            settings: settings.clone(),
            files,
            config: RwLock::new(Arc::new(config)),
        }))
    }

    /// Whether clients must present a certificate (mTLS).
    pub fn verifies_clients(&self) -> bool {
        self.settings.tls_client_ca.is_some()
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }
}

impl Reload for Tls {
    fn reload(&self, force: bool) {
        if !self.files.changed(force) {
            return;
        }
        match server_config(&self.settings) {
            Ok(config) => {
                tracing::info!("tls certificate reloaded");
                *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
            }
            Err(e) => {
                tracing::error!(error = %e, "tls files not reloaded; the previous certificate stays")
            }
        }
    }
}

/// The rustls configuration the files describe.
fn server_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (Some(cert_path), Some(key_path)) = (&settings.tls_cert, &settings.tls_key) else {
        return Err(TlsError("--tls-cert and --tls-key go together".into()));
    };
    let chain = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| TlsError(format!("{}: {e}", key_path.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match &settings.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => builder.with_client_cert_verifier(client_verifier(ca_path, &provider)?),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "{} with {}: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    // gRPC is HTTP/2 only; clients such as grpc-go insist on ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |e: &dyn std::fmt::Display| TlsError(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    if certs.is_empty() {
        return Err(fail(&"no certificate in the file"));
    }
    Ok(certs)
}

fn client_verifier(
    ca_path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(ca_path)? {
        roots
            .add(ca)
            .map_err(|e| TlsError(format!("{}: {e}", ca_path.display())))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError(format!("{}: {e}", ca_path.display())))
}

/// The subject alternative names (DNS and URI) of a connection's verified
/// client certificate; empty without one. Set once the TLS handshake is done,
/// which is before any call on the connection.
#[derive(Debug, Clone, Default)]
pub struct ClientNames(Arc<OnceLock<Vec<String>>>);

impl ClientNames {
    /// The names, or none before the handshake or without a client certificate.
    pub fn get(&self) -> &[String] {
        self.0.get().map_or(&[], Vec::as_slice)
    }

    /// Records the names of `connection`'s client certificate.
    pub(crate) fn set_from(&self, connection: &rustls::ServerConnection) {
        let names = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(names_of)
            .unwrap_or_default();
        let _ = self.0.set(names);
    }
}

fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    cert.valid_dns_names()
        .chain(cert.valid_uri_names())
        .map(str::to_owned)
        .collect()
}
