//! Auth files for tests: fresh tokens, written through a rename so a reload
//! never reads half a file, and requests that carry a token.

use tonic::Request;
use tonic::metadata::MetadataValue;

/// One `[[tokens]]` entry: its name, tenant (None: the default tenant), grants
/// (TOML inline tables) and token.
struct Entry {
    name: String,
    tenant: Option<String>,
    grants: String,
    token: String,
}

/// An auth file with one token per entry, and the tokens by name.
pub struct AuthFile {
    dir: tempfile::TempDir,
    /// Written before the tokens (`[[tenants]]` entries).
    header: String,
    entries: Vec<Entry>,
}

impl AuthFile {
    /// A file with a token per `(name, grants)`, in the default tenant.
    pub fn new(entries: &[(&str, &str)]) -> Self {
        let entries: Vec<_> = entries.iter().map(|(n, g)| (*n, None, *g)).collect();
        Self::with_tenants("", &entries)
    }

    /// A file starting with `header` and a token per `(name, tenant, grants)`.
    pub fn with_tenants(header: &str, entries: &[(&str, Option<&str>, &str)]) -> Self {
        let mut file = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            header: header.to_owned(),
            entries: Vec::new(),
        };
        file.entries = entries
            .iter()
            .map(|(name, tenant, grants)| Entry {
                name: (*name).to_owned(),
                tenant: tenant.map(str::to_owned),
                grants: (*grants).to_owned(),
                token: redwire::auth::keyring::mint().0,
            })
            .collect();
        file.save();
        file
    }

    /// Rewrites the file with fresh tokens for `entries`, in the default tenant.
    pub fn write(&mut self, entries: &[(&str, &str)]) {
        self.entries = entries
            .iter()
            .map(|(name, grants)| Entry {
                name: (*name).to_owned(),
                tenant: None,
                grants: (*grants).to_owned(),
                token: redwire::auth::keyring::mint().0,
            })
            .collect();
        self.save();
    }

    /// Rewrites the file with only the entries named `kept`, tokens unchanged.
    pub fn keep(&mut self, kept: &[&str]) {
        self.entries
            .retain(|entry| kept.contains(&entry.name.as_str()));
        self.save();
    }

    /// Writes the file, through a rename.
    pub fn save(&self) {
        let mut text = format!("{}\n", self.header);
        for entry in &self.entries {
            let hash = redwire::token::hex(&redwire::auth::keyring::sha256(&entry.token));
            let tenant = entry
                .tenant
                .as_ref()
                .map(|t| format!("tenant = \"{t}\"\n"))
                .unwrap_or_default();
            text.push_str(&format!(
                "[[tokens]]\nname = \"{}\"\n{tenant}sha256 = \"{hash}\"\ngrants = [{}]\n\n",
                entry.name, entry.grants
            ));
        }
        let temp = self.dir.path().join("auth.toml.tmp");
        std::fs::write(&temp, text).expect("write auth file");
        std::fs::rename(&temp, self.path()).expect("rename auth file");
    }

    /// Where the file is.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("auth.toml")
    }

    /// The token of the entry `name`.
    pub fn token(&self, name: &str) -> &str {
        let entry = self.entries.iter().find(|entry| entry.name == name);
        &entry.expect("token").token
    }
}

/// `request` with `authorization: Bearer <token>`.
pub fn with_token<T>(mut request: Request<T>, token: &str) -> Request<T> {
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("metadata");
    request.metadata_mut().insert("authorization", value);
    request
}
