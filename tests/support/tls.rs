//! Certificates made by the test with rcgen, written as PEM files in a temp dir: a
//! CA and one certificate for 127.0.0.1 / localhost, valid for servers and clients
//! (Redis uses it for its TLS port and its cluster bus, Redwire as its client
//! certificate).

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of a fresh CA and a certificate it signed.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes a CA and a certificate for 127.0.0.1 and localhost.
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("redwire-certs-")
            .tempdir()
            .expect("temp dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.distinguished_name
            .push(DnType::CommonName, "redwire test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed ca");
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().expect("leaf key");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("leaf params");
        leaf.distinguished_name
            .push(DnType::CommonName, "redwire test");
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = leaf.signed_by(&key, &issuer).expect("signed leaf");

        let certs = Self { dir };
        std::fs::write(certs.ca(), ca_cert.pem()).expect("write ca");
        std::fs::write(certs.cert(), cert.pem()).expect("write cert");
        std::fs::write(certs.key(), key.serialize_pem()).expect("write key");
        certs
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The certificate for 127.0.0.1 / localhost.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The certificate's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// redis-server flags for a TLS port that requires client certificates.
    pub fn redis_args(&self, tls_port: u16) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(self.cert()),
            "--tls-key-file".into(),
            path(self.key()),
            "--tls-ca-cert-file".into(),
            path(self.ca()),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
    }

    /// Redwire flags that trust the CA and present the certificate.
    pub fn redwire_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--redis-tls-ca-file".into(),
            path(self.ca()),
            "--redis-tls-cert-file".into(),
            path(self.cert()),
            "--redis-tls-key-file".into(),
            path(self.key()),
        ]
    }
}
