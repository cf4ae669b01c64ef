//! The auth file (`--auth-file`, TOML): the tokens Redwire accepts, stored as
//! SHA-256 hashes, and the client certificate names it grants to (under mTLS),
//! each with its tenant and the grants it carries, and the tenants with their
//! quotas. See `docs/AUTH.md` for a complete example.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use super::permissions::{Action, Permission, SERVICES};
use super::quota::{Quota, Tenant};
use crate::redis::keys;

/// Length of a token's random part, in bytes (256 bits).
const TOKEN_BYTES: usize = 32;
/// What every minted token starts with, so a leaked one is easy to find.
pub const TOKEN_PREFIX: &str = "rw_";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    tenants: Vec<TenantEntry>,
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    clients: Vec<ClientEntry>,
}

/// One `[[tenants]]` entry: a key space of its own, and its quotas.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    calls_per_second: Option<u32>,
    max_payload_bytes: Option<usize>,
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
    /// The `[[tenants]]` entry they act in; the default tenant when absent.
    tenant: Option<String>,
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
    /// The `[[tenants]]` entry it acts in; the default tenant when absent.
    tenant: Option<String>,
    #[serde(default)]
    grants: Vec<GrantEntry>,
}

/// One grant: the services and actions it allows (`["*"]` for all), on the
/// names matching `names` (all when absent) and none matching `deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    services: Vec<String>,
    actions: Vec<String>,
    names: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
}

/// Who made a call, as the auth file names them.
#[derive(Debug)]
pub struct Principal {
    /// The `name` of the token or client entry.
    pub name: String,
    /// The tenant it acts in; None for the default tenant.
    pub tenant: Option<Arc<Tenant>>,
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
    /// The names it covers.
    names: NameRule,
}

/// Which names of keys, queues, channels, streams and lock resources a grant
/// covers: those matching an `allow` pattern and no `deny` pattern. Patterns
/// are globs where `*` stands for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameRule {
    /// None: every name.
    allow: Option<Vec<String>>,
    deny: Vec<String>,
}

impl NameRule {
    /// True when the rule covers every name.
    fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// True when `name` matches a `deny` pattern.
    pub fn denies(&self, name: &str) -> bool {
        self.deny.iter().any(|pattern| glob_matches(pattern, name))
    }

    /// True when `name` matches an `allow` pattern (every name does without any).
    pub fn allows(&self, name: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|pattern| glob_matches(pattern, name)))
    }

    /// True when the rule has deny patterns (a wildcard subscription could
    /// reach a denied name).
    pub fn has_denials(&self) -> bool {
        !self.deny.is_empty()
    }
}

/// The name rules of the grants that allow one permission: a name is allowed
/// when one of them allows it and none denies it (deny wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRules(Vec<NameRule>);

impl NameRules {
    /// Why `name` is refused, if it is.
    pub fn refusal(&self, name: &str) -> Option<&'static str> {
        if self.0.iter().any(|rule| rule.denies(name)) {
            Some("is denied")
        } else if !self.0.iter().any(|rule| rule.allows(name)) {
            Some("matches none of the allowed names")
        } else {
            None
        }
    }

    /// True when some rule has deny patterns.
    pub fn has_denials(&self) -> bool {
        self.0.iter().any(NameRule::has_denials)
    }
}

impl Grant {
    fn covers(&self, permission: Permission) -> bool {
        self.services
            .as_ref()
            .is_none_or(|s| s.iter().any(|s| s == permission.service))
            && self
                .actions
                .as_ref()
                .is_none_or(|a| a.contains(&permission.action))
    }
}

impl Principal {
    /// True when some grant allows `permission` (on some names).
    pub fn allows(&self, permission: Permission) -> bool {
        self.grants.iter().any(|grant| grant.covers(permission))
    }

    /// The name rules of the grants that allow `permission`; None when one of
    /// them covers every name (the common case, which costs nothing per call).
    pub fn names_for(&self, permission: Permission) -> Option<NameRules> {
        let covering = || self.grants.iter().filter(|g| g.covers(permission));
        if covering().any(|grant| grant.names.is_open()) {
            return None;
        }
        Some(NameRules(covering().map(|g| g.names.clone()).collect()))
    }

    /// When the token stops working, if it does.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }
}

/// True when `name` matches `pattern`, where `*` matches any run of characters
/// (also none) and every other character itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((star_at, matched)) = star {
            // Let the `*` take one more character and try again.
            p = star_at + 1;
            n = matched + 1;
            star = Some((star_at, n));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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
        let mut tenants: HashMap<String, Arc<Tenant>> = HashMap::new();
        for entry in file.tenants {
            let at = format!("tenant {:?}", entry.name);
            keys::tenant_name(&entry.name).map_err(|e| format!("{at}: {e}"))?;
            let quota = Quota {
                calls_per_second: entry.calls_per_second,
                max_payload_bytes: entry.max_payload_bytes,
            };
            quota.check().map_err(|e| format!("{at}: {e}"))?;
            let tenant = Arc::new(Tenant::new(&entry.name, quota));
            if tenants.insert(entry.name, tenant).is_some() {
                return Err(format!("{at} is listed twice"));
            }
        }
        let tenant_of = |name: &Option<String>, at: &str| -> Result<_, String> {
            name.as_ref()
                .map(|name| {
                    tenants
                        .get(name)
                        .cloned()
                        .ok_or_else(|| format!("{at}: tenant {name:?} has no [[tenants]] entry"))
                })
                .transpose()
        };
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
                tenant: tenant_of(&entry.tenant, &at)?,
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
                tenant: tenant_of(&entry.tenant, &at)?,
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
    let patterns =
        |field: &str, list: &[String]| match list.iter().find(|pattern| pattern.is_empty()) {
            Some(_) => Err(format!("{field} holds an empty pattern")),
            None => Ok(list.to_vec()),
        };
    let allow = match &grant.names {
        Some(names) if names.is_empty() => {
            return Err("names is empty (leave it out to cover every name)".into());
        }
        Some(names) if names.iter().any(|n| n == "*") => None,
        Some(names) => Some(patterns("names", names)?),
        None => None,
    };
    let names = NameRule {
        allow,
        deny: patterns("deny", &grant.deny)?,
    };
    Ok(Grant {
        services,
        actions,
        names,
    })
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
