//! TLS on the gRPC listener with certificates the test makes (rcgen), over real
//! gRPC to an in-process Redwire on a real Redis: TLS serves and refuses
//! plaintext; mTLS refuses clients without a certificate the CA signed; a client
//! certificate's name is a principal of the auth file; a rotated certificate is
//! served to new connections while an open one keeps calling; a public listener
//! counts mTLS as authenticating callers.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redwire::proto::cache_client::CacheClient;
use rustls::pki_types::pem::PemObject;
use support::tls::{Issued, TestCerts};
use support::{RedisServer, eventually, get, set};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a server may take to answer its first call or notice a new file.
const SETTLE: Duration = Duration::from_secs(10);

/// Redwire with TLS flags on a real Redis, stopped on drop.
struct TlsServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), redwire::ServeError>>>,
    _redis: RedisServer,
}

impl TlsServer {
    /// Starts Redwire with `args` on a loopback port and waits until a client with
    /// `client` credentials sees it SERVING.
    async fn start(args: &[&str], client: &ClientCreds<'_>) -> Self {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut all = vec!["redwire", "--redis-url", &url, "--health-interval", "100ms"];
        all.extend_from_slice(&["--shutdown-grace", "5s", "--log", "warn"]);
        all.extend_from_slice(args);
        let config = redwire::Config::from_args(all).expect("config parses");
        let _ = redwire::telemetry::init(&config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(redwire::run(config, listener, async {
            let _ = rx.await;
        }));
        let started = Self {
            addr,
            shutdown: Some(tx),
            server: Some(server),
            _redis: redis,
        };
        let health = HealthClient::new(started.channel(client));
        eventually(SETTLE, "redwire serving over tls", || {
            let mut health = health.clone();
            async move {
                let request = HealthCheckRequest::default();
                let status = health.check(request).await.ok()?.into_inner().status;
                (status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
        started
    }

    /// A new connection to the server, with `client`'s credentials.
    fn channel(&self, client: &ClientCreds<'_>) -> Channel {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(client.ca)))
            .domain_name("localhost");
        if let Some(identity) = client.identity {
            tls = tls.identity(Identity::from_pem(
                read(&identity.cert),
                read(&identity.key),
            ));
        }
        Channel::from_shared(format!("https://{}", self.addr))
            .expect("uri")
            .tls_config(tls)
            .expect("tls config")
            .connect_lazy()
    }

    fn cache(&self, client: &ClientCreds<'_>) -> CacheClient<Channel> {
        CacheClient::new(self.channel(client))
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// What a client trusts and presents.
struct ClientCreds<'a> {
    ca: &'a Path,
    identity: Option<&'a Issued>,
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read pem")
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// Server certificate flags for `certs`' localhost certificate.
fn server_args(certs: &TestCerts) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        path(&certs.cert()),
        "--tls-key".into(),
        path(&certs.key()),
    ]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_calls_and_refuses_plaintext() {
    let certs = TestCerts::generate();
    let client = ClientCreds {
        ca: &certs.ca(),
        identity: None,
    };
    let args = server_args(&certs);
    let server = TlsServer::start(&strs(&args), &client).await;

    let mut cache = server.cache(&client);
    cache.set(set("tls:k", "v")).await.expect("set over tls");
    let value = cache.get(get("tls:k")).await.expect("get").into_inner();
    assert_eq!(value.value, b"v");

    let plaintext = Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect_lazy();
    let refused = CacheClient::new(plaintext)
        .get(get("tls:k"))
        .await
        .expect_err("plaintext to a tls listener");
    assert_ne!(refused.code(), Code::Ok);
    // The server is still serving TLS clients.
    cache.get(get("tls:k")).await.expect("get after plaintext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate_the_ca_signed() {
    let certs = TestCerts::generate();
    let worker = certs.issue("worker", &["worker.internal"]);
    let client = ClientCreds {
        ca: &certs.ca(),
        identity: Some(&worker),
    };
    let mut args = server_args(&certs);
    args.extend(["--tls-client-ca".into(), path(&certs.ca())]);
    let server = TlsServer::start(&strs(&args), &client).await;
    server
        .cache(&client)
        .set(set("mtls:k", "v"))
        .await
        .expect("a client certificate the CA signed");

    let anonymous = ClientCreds {
        ca: &certs.ca(),
        identity: None,
    };
    let refused = server.cache(&anonymous).get(get("mtls:k")).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");

    let other_ca = TestCerts::generate();
    let stranger = other_ca.issue("stranger", &["worker.internal"]);
    let foreign = ClientCreds {
        ca: &certs.ca(),
        identity: Some(&stranger),
    };
    let refused = server.cache(&foreign).get(get("mtls:k")).await;
    assert!(
        refused.is_err(),
        "a certificate another CA signed: {refused:?}"
    );

    server
        .cache(&client)
        .get(get("mtls:k"))
        .await
        .expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_name_is_a_principal_of_the_auth_file() {
    let certs = TestCerts::generate();
    let billing = certs.issue("billing", &["spiffe://example.org/billing"]);
    let other = certs.issue("other", &["other.internal"]);
    let (token, hash) = redwire::auth::keyring::mint();
    let dir = tempfile::tempdir().expect("temp dir");
    let auth_file = dir.path().join("auth.toml");
    std::fs::write(
        &auth_file,
        format!(
            r#"
[[clients]]
name = "billing"
san = "spiffe://example.org/billing"
grants = [{{ services = ["cache"], actions = ["read"] }}]

[[tokens]]
name = "writer"
sha256 = "{hash}"
grants = [{{ services = ["cache"], actions = ["write"] }}]
"#
        ),
    )
    .expect("write auth file");
    let mut args = server_args(&certs);
    args.extend(["--tls-client-ca".into(), path(&certs.ca())]);
    args.extend(["--auth-file".into(), path(&auth_file)]);
    let billing_client = ClientCreds {
        ca: &certs.ca(),
        identity: Some(&billing),
    };
    let server = TlsServer::start(&strs(&args), &billing_client).await;

    let mut cache = server.cache(&billing_client);
    cache
        .get(get("names:k"))
        .await
        .expect("the certificate's name grants cache:read");
    let denied = cache.set(set("names:k", "v")).await.expect_err("no write");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("billing") && denied.message().contains("cache:write"),
        "{denied:?}"
    );

    let mut with_token = Request::new(set("names:k", "v"));
    let bearer = format!("Bearer {token}").parse().expect("metadata");
    with_token.metadata_mut().insert("authorization", bearer);
    cache
        .set(with_token)
        .await
        .expect("a token takes precedence over the certificate");

    let other_client = ClientCreds {
        ca: &certs.ca(),
        identity: Some(&other),
    };
    let unknown = server
        .cache(&other_client)
        .get(get("names:k"))
        .await
        .expect_err("a certificate name the file does not list");
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
    assert!(unknown.message().contains("other.internal"), "{unknown:?}");
}

/// The DER of the certificate a new TLS connection to `addr` is shown.
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(ca).ok()?;
    roots.add(ca).ok()?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let tls = connector.connect(name, tcp).await.ok()?;
    let chain = tls.get_ref().1.peer_certificates()?;
    Some(chain.first()?.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_while_an_open_connection_keeps_calling() {
    let certs = TestCerts::generate();
    let client = ClientCreds {
        ca: &certs.ca(),
        identity: None,
    };
    let args = server_args(&certs);
    let server = TlsServer::start(&strs(&args), &client).await;
    let before = served_certificate(server.addr, &certs.ca())
        .await
        .expect("a tls handshake");

    // One connection calls without pause through the rotation.
    let mut cache = server.cache(&client);
    cache.set(set("rot:k", "v")).await.expect("set");
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let caller = tokio::spawn({
        let (calls, stop) = (calls.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                cache.get(get("rot:k")).await?;
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tonic::Status>(())
        }
    });

    let rotated = certs.issue_to(&["127.0.0.1", "localhost"], &certs.cert(), &certs.key());
    assert_ne!(rotated, before);
    eventually(
        SETTLE,
        "new connections get the rotated certificate",
        || {
            let ca = certs.ca();
            let rotated = rotated.clone();
            async move {
                let served = served_certificate(server.addr, &ca).await?;
                (served == rotated).then_some(())
            }
        },
    )
    .await;
    let at_rotation = calls.load(Ordering::Relaxed);
    eventually(SETTLE, "the open connection calls on", || {
        let calls = calls.clone();
        async move { (calls.load(Ordering::Relaxed) > at_rotation).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    caller
        .await
        .expect("caller task")
        .expect("no call failed during the rotation");

    let mut fresh = server.cache(&client);
    fresh
        .get(get("rot:k"))
        .await
        .expect("a new client trusts it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_listener_accepts_mtls_as_authenticating_callers() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start();
    let url = redis.url();
    let start = |extra: &[String]| {
        let mut args = vec!["redwire".to_owned(), "--redis-url".into(), url.clone()];
        args.extend_from_slice(&server_args(&certs));
        args.extend_from_slice(extra);
        redwire::Config::from_args(args).expect("config parses")
    };
    let public = || async {
        tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind")
    };
    let refused = redwire::run(start(&[]), public().await, async {})
        .await
        .expect_err("tls alone does not say who calls");
    assert!(refused.to_string().contains("--tls-client-ca"), "{refused}");
    redwire::run(
        start(&["--tls-client-ca".into(), path(&certs.ca())]),
        public().await,
        async {},
    )
    .await
    .expect("mTLS authenticates callers");
}
