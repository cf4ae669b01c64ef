//! Certificates made by the test with rcgen, written as PEM files in a temp dir: a
//! CA and one certificate for 127.0.0.1 / localhost, valid for servers and clients
//! (Redis uses it for its TLS port and its cluster bus, Redwire as its client
//! certificate), and more certificates the CA issues on request.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, string::Ia5String,
};

/// PEM files of a fresh CA and a certificate it signed.
pub struct TestCerts {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate the test CA issued, as PEM files, and its DER encoding.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
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
        let certs = Self { dir, issuer };
        std::fs::write(certs.ca(), ca_cert.pem()).expect("write ca");
        certs.issue_to(&["127.0.0.1", "localhost"], &certs.cert(), &certs.key());
        certs
    }

    /// A new certificate (and key) for `names`, written to `<stem>.pem` and
    /// `<stem>-key.pem`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        let cert = self.dir.path().join(format!("{stem}.pem"));
        let key = self.dir.path().join(format!("{stem}-key.pem"));
        let der = self.issue_to(names, &cert, &key);
        Issued { cert, key, der }
    }

    /// Issues a certificate for `names`, valid for servers and clients, writes
    /// it and its key to `cert` and `key` (each replaced in one rename, as
    /// certificate tooling does), and returns its DER.
    pub fn issue_to(&self, names: &[&str], cert: &Path, key: &Path) -> Vec<u8> {
        let key_pair = KeyPair::generate().expect("leaf key");
        // DNS names and IP addresses; `scheme://...` names become URI names.
        let (uris, names): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.contains("://"));
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let mut leaf = CertificateParams::new(names).expect("leaf params");
        for uri in uris {
            let uri = Ia5String::try_from(uri).expect("ascii uri");
            leaf.subject_alt_names.push(SanType::URI(uri));
        }
        leaf.distinguished_name
            .push(DnType::CommonName, "redwire test");
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let signed = leaf
            .signed_by(&key_pair, &self.issuer)
            .expect("signed leaf");
        replace(cert, &signed.pem());
        replace(key, &key_pair.serialize_pem());
        signed.der().to_vec()
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

/// Writes `text` to `path` through a temp file and a rename, so a reader sees
/// the old file or the new one, never half of one.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}
