//! What one call may touch: its tenant (whose key space its names live in) and
//! the name patterns of the grants that allowed it. The auth layer puts a
//! [`Scope`] into every call's extensions; a handler reports each queue, stream,
//! lock, channel or key name through it ([`Scope::name`], [`Scope::allow`]), so
//! the check is written once, here, and no handler decides about names itself.
//! Without `--auth-file` the scope is the default tenant's and allows every name.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Arc;

use super::keyring::NameRules;
use super::quota::Tenant;
use crate::error::{Error, Reason, Result};
use crate::redis::keys;
use crate::validate;

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    tenant: Option<Arc<Tenant>>,
    names: Option<Arc<NameRules>>,
    admin: Option<Arc<AdminCall>>,
}

/// Who makes an admin call, for its audit lines.
#[derive(Debug)]
struct AdminCall {
    principal: String,
    method: String,
}

impl Scope {
    /// The scope of a call of `principal` to `method`, in `tenant`, with the
    /// name rules of the grants that allow it (None: every name); admin calls
    /// get an audit line per name they report.
    pub(super) fn new(
        tenant: Option<Arc<Tenant>>,
        names: Option<NameRules>,
        admin: Option<(&str, &str)>,
    ) -> Self {
        Self {
            tenant,
            names: names.map(Arc::new),
            admin: admin.map(|(principal, method)| {
                Arc::new(AdminCall {
                    principal: principal.to_owned(),
                    method: method.to_owned(),
                })
            }),
        }
    }

    /// The scope the auth layer gave `request`; the default tenant's, allowing
    /// every name, when there is none (no `--auth-file`).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Scope>()
            .cloned()
            .unwrap_or_default()
    }

    /// The tenant's name; None for the default tenant.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_ref().map(|tenant| &*tenant.name)
    }

    /// A queue, stream or lock resource name of the request's `field`: checked
    /// as a name ([`validate::name`]) and against the grants, and qualified with
    /// the tenant for the key schema ([`keys::qualify`]).
    pub fn name<'a>(&self, field: impl Display, name: &'a str) -> Result<Cow<'a, str>> {
        validate::name(&field, name)?;
        self.allow(&field, name)?;
        Ok(keys::qualify(self.tenant(), name))
    }

    /// The user's name of a qualified name of this tenant (None if it is
    /// another tenant's).
    pub fn user_name<'a>(&self, qualified: &'a str) -> Option<&'a str> {
        keys::unqualify(self.tenant(), qualified)
    }

    /// How a listing shows the registered `qualified` name to this caller: its
    /// own tenant's names, as it names them, when its grants cover them.
    pub fn listed(&self, qualified: &str) -> Option<String> {
        let name = self.user_name(qualified)?;
        self.covers(name).then(|| name.to_owned())
    }

    /// True when the grants cover `name` (for filtering lists; no audit line).
    pub fn covers(&self, name: &str) -> bool {
        self.names
            .as_ref()
            .is_none_or(|rules| rules.refusal(name).is_none())
    }

    /// Checks that the grants cover the name (a cache key, a channel) in the
    /// request's `field`; `PERMISSION_DENIED` naming both when they do not.
    pub fn allow(&self, field: impl Display, name: &str) -> Result<()> {
        let refusal = self.names.as_ref().and_then(|rules| rules.refusal(name));
        self.audit(&field, name, refusal.is_none());
        match refusal {
            None => Ok(()),
            Some(why) => Err(denied(field, name, why)),
        }
    }

    /// Checks a subscription pattern in `field`: the grants must cover the
    /// pattern's text, and may deny nothing, since a pattern could match a denied
    /// channel.
    pub fn allow_pattern(&self, field: impl Display, pattern: &str) -> Result<()> {
        if self.names.as_ref().is_some_and(|rules| rules.has_denials()) {
            return Err(denied(
                field,
                pattern,
                "is a wildcard, which grants with deny patterns do not allow",
            ));
        }
        self.allow(field, pattern)
    }

    /// The audit line of an admin call naming `name`, allowed or not.
    fn audit(&self, field: &dyn Display, name: &str, allowed: bool) {
        let Some(admin) = &self.admin else { return };
        let tenant = self.tenant().unwrap_or("");
        tracing::info!(
            target: "redwire::audit",
            principal = %admin.principal,
            tenant,
            method = %admin.method,
            field = %field,
            target = name,
            allowed,
            "admin call"
        );
    }
}

fn denied(field: impl Display, name: &str, why: &str) -> Error {
    Error::refused(
        Reason::PermissionDenied,
        format!("{field} {name:?} {why} by the token's grants"),
    )
    .with("field", field)
    .with("name", name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keyring::Keyring;
    use crate::auth::permissions::permission_of;

    /// The scope the auth file's one token gets for `path`.
    fn scope(grants: &str, path: &str) -> Scope {
        let (token, hash) = crate::auth::keyring::mint();
        let text = format!(
            "[[tenants]]\nname = \"acme\"\n[[tokens]]\nname = \"t\"\ntenant = \"acme\"\n\
             sha256 = \"{hash}\"\ngrants = [{grants}]\n"
        );
        let keyring = Keyring::parse(&text).expect("parses");
        let principal = keyring.find(&token).expect("found");
        let permission = permission_of(path).expect("rpc");
        Scope::new(
            principal.tenant.clone(),
            principal.names_for(permission),
            None,
        )
    }

    #[test]
    fn deny_wins_over_allow_and_names_are_qualified() {
        let scope = scope(
            r#"{ services = ["queue"], actions = ["write"], names = ["mail-*"], deny = ["mail-secret*"] }"#,
            "/redwire.v1.Queue/Enqueue",
        );
        assert_eq!(
            scope.name("queue", "mail-eu").expect("allowed"),
            "acme/mail-eu"
        );
        let denied = scope.name("queue", "mail-secret-1").expect_err("denied");
        assert_eq!(denied.reason(), Reason::PermissionDenied);
        assert!(
            denied
                .to_string()
                .contains("queue \"mail-secret-1\" is denied"),
            "{denied}"
        );
        let outside = scope.name("queue", "billing").expect_err("not allowed");
        assert!(outside.to_string().contains("matches none"), "{outside}");
        assert!(scope.allow_pattern("patterns[0]", "mail-*").is_err());
        assert_eq!(scope.user_name("acme/mail-eu"), Some("mail-eu"));
        assert_eq!(scope.user_name("mail-eu"), None);
    }

    #[test]
    fn only_the_grants_of_the_permission_count() {
        let grants = r#"{ services = ["queue"], actions = ["read"] },
            { services = ["queue"], actions = ["admin"], names = ["scratch-*"] }"#;
        let stats = scope(grants, "/redwire.v1.Queue/Stats");
        assert!(stats.name("queue", "mail").is_ok());
        let purge = scope(grants, "/redwire.v1.Queue/Purge");
        assert!(purge.name("queue", "mail").is_err());
        assert!(purge.name("queue", "scratch-1").is_ok());
        // A covering grant without patterns means no per-name work at all.
        assert!(stats.names.is_none());
    }

    /// A log sink the test can read.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn admin_calls_are_audited_with_principal_tenant_method_and_target() {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let tenant = Arc::new(Tenant::new("acme", Default::default()));
        let admin = Scope::new(Some(tenant), None, Some(("ops", "/redwire.v1.Queue/Purge")));
        tracing::subscriber::with_default(subscriber, || {
            admin.name("queue", "mail").expect("allowed");
            Scope::default()
                .name("queue", "quiet")
                .expect("not an admin call");
        });
        let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let line = text
            .lines()
            .find(|l| l.contains("admin call"))
            .expect("an audit line");
        for part in [
            "redwire::audit",
            "principal=ops",
            "tenant=\"acme\"",
            "method=/redwire.v1.Queue/Purge",
            "target=\"mail\"",
            "allowed=true",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
        assert!(
            !text.contains("quiet"),
            "only admin calls are audited: {text}"
        );
    }

    #[test]
    fn without_auth_every_name_is_the_default_tenants() {
        let scope = Scope::default();
        assert_eq!(scope.name("queue", "mail").expect("allowed"), "mail");
        assert!(scope.allow_pattern("patterns[0]", "*").is_ok());
        assert!(scope.name("queue", "a/b").is_err(), "not a name");
    }
}
