//! The auth file (`--auth-file`, TOML): the tokens Redwire accepts, stored as
//! SHA-256 hashes, and the client certificate names it grants to (under mTLS),
//! each with the grants it carries. See `docs/AUTH.md` for a complete example.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use super::permissions::{Action, Permission, SERVICES};

/// Length of a token's random part, in bytes (256 bits).
const TOKEN_BYTES: usize = 32;
/// What every minted token starts with, so a leaked one is easy to find.
pub const TOKEN_PREFIX: &str = "rw_";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    clients: Vec<ClientEntry>,
}

/// One `[[clients]]` entry: callers known by a name in their verified client
/// certificate (a DNS or URI subject alternative name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    /// Who they are, for logs and audit lines.
    name: String,
    /// The certificate name they are known by.
    san: String,
    #[serde(default)]
    grants: Vec<GrantEntry>,
}

/// One `[[tokens]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// Who holds it, for logs and audit lines.
    name: String,
    /// Hex SHA-256 of the token.
    sha256: String,
    /// RFC 3339 time after which the token is refused.
    expires: Option<String>,
    #[serde(default)]
    grants: Vec<GrantEntry>,
}

/// One grant: the services and actions it allows (`["*"]` for all).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    services: Vec<String>,
    actions: Vec<String>,
}

/// Who made a call, as the auth file names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The `name` of the token or client entry.
    pub name: String,
    expires: Option<SystemTime>,
    grants: Vec<Grant>,
}

/// What one grant allows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    /// Service short names; None for all.
    services: Option<Vec<String>>,
    /// Action classes; None for all.
    actions: Option<Vec<Action>>,
}

impl Principal {
    /// True when some grant allows `permission`.
    pub fn allows(&self, permission: Permission) -> bool {
        self.grants.iter().any(|grant| {
            grant
                .services
                .as_ref()
                .is_none_or(|s| s.iter().any(|s| s == permission.service))
                && grant
                    .actions
                    .as_ref()
                    .is_none_or(|a| a.contains(&permission.action))
        })
    }

    /// When the token stops working, if it does.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }
}

/// The tokens of one version of the auth file, by hash, and its client
/// certificate names.
#[derive(Debug, Default)]
pub struct Keyring {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
    by_client_name: HashMap<String, Arc<Principal>>,
}

/// Why an auth file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth file {path}: {problem}")]
pub struct KeyringError {
    path: String,
    problem: String,
}

impl Keyring {
    /// Reads and checks the auth file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let fail = |problem: String| KeyringError {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::parse(&text).map_err(fail)
    }

    /// Parses and checks auth file `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: AuthFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for entry in file.tokens {
            let at = format!("token {:?}", entry.name);
            let hash = parse_hash(&entry.sha256).map_err(|e| format!("{at}: sha256 {e}"))?;
            let expires = entry
                .expires
                .as_deref()
                .map(|t| {
                    humantime::parse_rfc3339_weak(t)
                        .map_err(|e| format!("{at}: expires {t:?}: {e}"))
                })
                .transpose()?;
            let grants = parse_grants(&entry.grants).map_err(|e| format!("{at}: {e}"))?;
            let principal = Principal {
                name: entry.name,
                expires,
                grants,
            };
            if by_hash.insert(hash, Arc::new(principal)).is_some() {
                return Err(format!("{at}: the same token is listed twice"));
            }
        }
        let mut by_client_name = HashMap::new();
        for entry in file.clients {
            let at = format!("client {:?}", entry.name);
            if entry.san.is_empty() {
                return Err(format!("{at}: san must not be empty"));
            }
            let principal = Principal {
                grants: parse_grants(&entry.grants).map_err(|e| format!("{at}: {e}"))?,
                name: entry.name,
                expires: None,
            };
            if by_client_name
                .insert(entry.san.clone(), Arc::new(principal))
                .is_some()
            {
                return Err(format!("{at}: san {:?} is listed twice", entry.san));
            }
        }
        Ok(Self {
            by_hash,
            by_client_name,
        })
    }

    /// The principal of `token`, if the file lists it.
    pub fn find(&self, token: &str) -> Option<&Arc<Principal>> {
        self.find_hash(&sha256(token))
    }

    /// The principal of the token with SHA-256 `hash`, if the file lists it.
    pub fn find_hash(&self, hash: &[u8; 32]) -> Option<&Arc<Principal>> {
        self.by_hash.get(hash)
    }

    /// The principal of a client whose certificate has `names`: the first name
    /// the file lists.
    pub fn find_client(&self, names: &[String]) -> Option<&Arc<Principal>> {
        names.iter().find_map(|name| self.by_client_name.get(name))
    }

    /// How many tokens and client names the file lists.
    pub fn len(&self) -> usize {
        self.by_hash.len() + self.by_client_name.len()
    }

    /// True when the file lists no token and no client (every call is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_grants(grants: &[GrantEntry]) -> Result<Vec<Grant>, String> {
    grants.iter().map(parse_grant).collect()
}

fn parse_grant(grant: &GrantEntry) -> Result<Grant, String> {
    let all = |list: &[String]| list.iter().any(|item| item == "*");
    let services = if all(&grant.services) {
        None
    } else {
        for service in &grant.services {
            if !SERVICES.contains(&service.as_str()) {
                return Err(format!(
                    "unknown service {service:?} (one of {SERVICES:?} or \"*\")"
                ));
            }
        }
        Some(grant.services.clone())
    };
    let actions = if all(&grant.actions) {
        None
    } else {
        let parsed = grant
            .actions
            .iter()
            .map(|action| {
                Action::parse(action).ok_or_else(|| {
                    format!("unknown action {action:?} (read, write, consume, admin or \"*\")")
                })
            })
            .collect::<Result<_, _>>()?;
        Some(parsed)
    };
    Ok(Grant { services, actions })
}

fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 {
        return Err(format!("must be 64 hex digits, not {}", hex.len()));
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "must be hex digits".to_owned())?;
    }
    Ok(hash)
}

/// The SHA-256 of `token`, as the auth file stores it.
pub fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// A new random token (256 bits from the OS) and the hex SHA-256 the auth file
/// stores for it.
pub fn mint() -> (String, String) {
    let token = format!(
        "{TOKEN_PREFIX}{}",
        crate::token::random_hex::<TOKEN_BYTES>()
    );
    let hash = crate::token::hex(&sha256(&token));
    (token, hash)
}

/// A new token and the auth-file block that grants it `services` and `actions`,
/// with the token in a leading comment line (`# token: rw_...`); checked by
/// parsing it as the server will.
pub fn mint_block(name: &str, services: &[String], actions: &[String]) -> Result<String, String> {
    let (token, hash) = mint();
    let list = |items: &[String]| {
        items
            .iter()
            .map(|item| format!("{item:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let block = format!(
        "# token: {token}\n[[tokens]]\nname = {name:?}\nsha256 = \"{hash}\"\n\
         grants = [{{ services = [{}], actions = [{}] }}]\n",
        list(services),
        list(actions)
    );
    Keyring::parse(&block)?;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(service: &'static str, action: Action) -> Permission {
        Permission { service, action }
    }

    #[test]
    fn a_minted_token_is_found_by_its_hash_with_its_grants() {
        let (token, hash) = mint();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == 3 + 64);
        let keyring = Keyring::parse(&format!(
            r#"
            [[tokens]]
            name = "worker"
            sha256 = "{hash}"
            grants = [{{ services = ["queue"], actions = ["write", "consume"] }}]
            "#
        ))
        .expect("parses");
        let worker = keyring.find(&token).expect("found");
        assert_eq!(worker.name, "worker");
        assert!(worker.allows(permission("queue", Action::Consume)));
        assert!(!worker.allows(permission("queue", Action::Admin)));
        assert!(!worker.allows(permission("cache", Action::Write)));
        assert!(keyring.find("rw_other").is_none());
    }

    #[test]
    fn a_client_is_found_by_any_of_its_certificate_names() {
        let keyring = Keyring::parse(
            r#"
            [[clients]]
            name = "billing"
            san = "spiffe://example.org/billing"
            grants = [{ services = ["cache"], actions = ["read"] }]
            "#,
        )
        .expect("parses");
        let names = [
            "billing.internal".to_owned(),
            "spiffe://example.org/billing".to_owned(),
        ];
        let billing = keyring.find_client(&names).expect("found");
        assert_eq!(billing.name, "billing");
        assert!(billing.allows(permission("cache", Action::Read)));
        assert!(!billing.allows(permission("cache", Action::Write)));
        assert!(keyring.find_client(&names[..1]).is_none());
        assert!(keyring.find_client(&[]).is_none());
    }

    #[test]
    fn wildcards_allow_everything() {
        let (token, hash) = mint();
        let keyring = Keyring::parse(&format!(
            "[[tokens]]\nname = \"ops\"\nsha256 = \"{hash}\"\n\
             grants = [{{ services = [\"*\"], actions = [\"*\"] }}]\n"
        ))
        .expect("parses");
        let ops = keyring.find(&token).expect("found");
        assert!(ops.allows(permission("stream", Action::Admin)));
    }

    #[test]
    fn mistakes_are_named() {
        let (_, hash) = mint();
        let cases = [
            ("[[tokens]]\nname = \"a\"\nsha256 = \"abc\"\n", "sha256"),
            (
                &format!(
                    "[[tokens]]\nname = \"a\"\nsha256 = \"{hash}\"\n\
                     grants = [{{ services = [\"queues\"], actions = [\"read\"] }}]\n"
                ),
                "unknown service \"queues\"",
            ),
            (
                &format!(
                    "[[tokens]]\nname = \"a\"\nsha256 = \"{hash}\"\n\
                     grants = [{{ services = [\"queue\"], actions = [\"delete\"] }}]\n"
                ),
                "unknown action \"delete\"",
            ),
            (
                &format!("[[tokens]]\nname = \"a\"\nsha256 = \"{hash}\"\nexpires = \"soon\"\n"),
                "expires",
            ),
            ("[[tokens]]\nname = \"a\"\nsha = \"x\"\n", "unknown field"),
            (
                "[[clients]]\nname = \"a\"\nsan = \"\"\n",
                "san must not be empty",
            ),
            (
                "[[clients]]\nname = \"a\"\nsan = \"x\"\n[[clients]]\nname = \"b\"\nsan = \"x\"\n",
                "listed twice",
            ),
        ];
        for (text, named) in cases {
            let error = Keyring::parse(text).expect_err(text);
            assert!(error.contains(named), "{text}: {error}");
        }
    }
}
