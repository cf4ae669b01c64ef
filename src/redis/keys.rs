//! The key schema: the only place where Redis key names are built.
//!
//! Every key Redwire writes starts with `rw:`, then the tenant's name and a `/`
//! for a tenant of the auth file (none for the default tenant), then a short
//! space name (`c` for the Cache): `rw:c:user:42` for the default tenant,
//! `rw:acme/c:user:42` for tenant `acme`. Tenant names cannot hold `:`, so no
//! tenant's keys can be mistaken for the default tenant's.
//!
//! Queues, streams and locks are named inside the server by their *qualified*
//! name ([`qualify`]): the user's name for the default tenant, `acme/mail` for
//! queue `mail` of tenant `acme`. Those names cannot hold `/`
//! ([`crate::validate::name`]), so a qualified name is unambiguous; wake-up
//! messages, the queue registry and in-process waiter registries carry it, which
//! keeps tenants apart there too. The hash tag holds the user's name only, so one
//! queue, stream or lock stays in one cluster slot.
//!
//! User names are escaped so that they can never contain `{` or `}`: Redis Cluster
//! hashes only the text between the first `{` and the next `}`, and a user who could
//! write braces could steer keys into chosen slots. Escaping is percent-style
//! (`%` → `%25`, `{` → `%7B`, `}` → `%7D`), which keeps distinct names distinct.
//!
//! The strings built here are a storage format: the unit tests pin them.

use std::borrow::Cow;

/// Prefix of every key Redwire owns.
pub const PREFIX: &str = "rw:";

/// What separates a tenant's name from a name in a qualified name and in keys.
pub const TENANT_SEPARATOR: char = '/';

/// Longest tenant name.
pub const MAX_TENANT_BYTES: usize = 64;

/// Why `name` cannot be a tenant's, if it cannot: 1 to 64 lower-case ASCII
/// letters, digits, `-` and `_`.
pub fn tenant_name(name: &str) -> Result<(), String> {
    let fits = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_');
    if name.is_empty() || name.len() > MAX_TENANT_BYTES || !name.chars().all(fits) {
        return Err(format!(
            "a tenant name is 1 to {MAX_TENANT_BYTES} lower-case letters, digits, - and _"
        ));
    }
    Ok(())
}

/// The qualified name of `name` in `tenant` (None: the default tenant).
pub fn qualify<'a>(tenant: Option<&str>, name: &'a str) -> Cow<'a, str> {
    match tenant {
        None => Cow::Borrowed(name),
        Some(tenant) => Cow::Owned(format!("{tenant}{TENANT_SEPARATOR}{name}")),
    }
}

/// The user's name in a qualified name of `tenant`, if it is one of its names.
pub fn unqualify<'a>(tenant: Option<&str>, qualified: &'a str) -> Option<&'a str> {
    match (split(qualified), tenant) {
        ((None, name), None) => Some(name),
        ((Some(owner), name), Some(tenant)) if owner == tenant => Some(name),
        _ => None,
    }
}

/// The user's name in a qualified name, whichever tenant's it is (for replies
/// to the tenant that named it).
pub fn user_name(qualified: &str) -> &str {
    split(qualified).1
}

/// The tenant (None: the default tenant) and the user's name of a qualified
/// name.
pub fn split(qualified: &str) -> (Option<&str>, &str) {
    match qualified.split_once(TENANT_SEPARATOR) {
        Some((tenant, name)) => (Some(tenant), name),
        None => (None, qualified),
    }
}

/// The key of `name` in `space` of `tenant`, from `rw:` to the end:
/// `rw:q:<name>` or `rw:acme/q:<name>`. One allocation: it runs per call.
fn space_key(tenant: Option<&str>, space: &str, name: std::fmt::Arguments<'_>) -> String {
    match tenant {
        None => format!("{PREFIX}{space}:{name}"),
        Some(tenant) => format!("{PREFIX}{tenant}{TENANT_SEPARATOR}{space}:{name}"),
    }
}

/// The start of the keys of the resource with qualified name `qualified`,
/// through its hash tag: `rw:q:{mail}` or `rw:acme/q:{mail}`.
fn tagged(space: Space, qualified: &str) -> String {
    let (tenant, name) = split(qualified);
    space_key(tenant, space.tag(), format_args!("{{{}}}", escape(name)))
}

/// The services' key spaces, so one user name used by two services never collides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Cache values (any Redis type, one key per user key).
    Cache,
    /// Job queues (several keys per queue, sharing one hash tag).
    Queue,
    /// Event streams (a stream, its dead-letter stream and group settings share
    /// one hash tag).
    Stream,
    /// Locks (owner, fencing counter and waiters of a resource share one hash tag).
    Lock,
}

impl Space {
    fn tag(self) -> &'static str {
        match self {
            Space::Cache => "c",
            Space::Queue => "q",
            Space::Stream => "s",
            Space::Lock => "l",
        }
    }
}

/// The user-facing suffix naming a stream's dead-letter stream: the dead letters
/// of `orders` are the stream `orders:dead`.
pub const DEAD_LETTER_SUFFIX: &str = ":dead";

/// The keys of the stream with qualified name `name`: (the stream, its
/// dead-letter stream, its group settings hash). A name ending in `:dead` is
/// the dead-letter stream of the name before it, so both live in one cluster
/// slot.
pub fn stream_keys(name: &str) -> (String, String, String) {
    let base = name.strip_suffix(DEAD_LETTER_SUFFIX).unwrap_or(name);
    let tagged = tagged(Space::Stream, base);
    let stream = if base.len() == name.len() {
        tagged.clone()
    } else {
        format!("{tagged}{DEAD_LETTER_SUFFIX}")
    };
    (
        stream,
        format!("{tagged}{DEAD_LETTER_SUFFIX}"),
        format!("{tagged}:groups"),
    )
}

/// The keys of the lock resource with qualified name `resource`: (owner,
/// fencing counter, waiters).
pub fn lock_keys(resource: &str) -> [String; 3] {
    let base = tagged(Space::Lock, resource);
    ["owner", "fence", "waiters"].map(|suffix| format!("{base}:{suffix}"))
}

/// The index of held locks, for ListLocks (one hash tag, so one cluster slot):
/// a sorted set of qualified resource names scored by when their lease ends
/// (ms since the epoch), and a hash of each one's holder token.
pub const HELD_LOCKS: [&str; 2] = ["rw:l:held:{index}:leases", "rw:l:held:{index}:tokens"];

/// The pub/sub channel on which released locks are announced (`"1 <resource>"`,
/// the resource's qualified name).
pub const LOCK_WAKE_CHANNEL: &str = "rw:l:wake";

/// Space name of classic pub/sub channels and patterns (`rw:ps:<channel>`).
const PUBSUB_SPACE: &str = "ps";

/// Space name of sharded pub/sub channels (`rw:pss:<channel>`).
const SHARDED_PUBSUB_SPACE: &str = "pss";

/// The Redis channel for a user channel (or Redis glob pattern) name of
/// `tenant`. Patterns get the same prefix, so they only ever match Redwire's
/// own channels of the same tenant.
pub fn pubsub_channel(tenant: Option<&str>, name: &str, sharded: bool) -> String {
    let space = if sharded {
        SHARDED_PUBSUB_SPACE
    } else {
        PUBSUB_SPACE
    };
    space_key(tenant, space, format_args!("{}", escape(name)))
}

/// The user's channel name of a Redis channel [`pubsub_channel`] built (the
/// Redis channel itself if it is not one).
pub fn user_channel(redis_channel: &str) -> &str {
    let Some(rest) = redis_channel.strip_prefix(PREFIX) else {
        return redis_channel;
    };
    // A tenant's name holds no `:`; the default tenant's space name comes first.
    let rest = match rest.split_once(TENANT_SEPARATOR) {
        Some((tenant, rest)) if !tenant.contains(':') => rest,
        _ => rest,
    };
    [SHARDED_PUBSUB_SPACE, PUBSUB_SPACE]
        .iter()
        .find_map(|space| rest.strip_prefix(space)?.strip_prefix(':'))
        .unwrap_or(redis_channel)
}

/// The set of the qualified name of every queue that ever had a job (for
/// ListQueues, which shows each tenant its own, and the reaper).
pub const QUEUE_REGISTRY: &str = "rw:queues";

/// The set of the qualified name of every stream that was ever appended to
/// (for the metrics).
pub const STREAM_REGISTRY: &str = "rw:streams";

/// The pub/sub channel on which queue scripts announce ready jobs
/// (message: `"<count> <queue>"`, the queue's qualified name).
pub const QUEUE_WAKE_CHANNEL: &str = "rw:q:wake";

/// The keys of one queue. Every queue script gets them as `KEYS`, in the order of
/// [`QueueKeys::NAMES`], and refers to them by those names (`K.jobs`, `K.dead`):
/// the scripts' `K` table is generated from the same list (`queue::store`), so
/// Rust and Lua cannot disagree on the order. All share the hash tag `{<queue>}`,
/// so one queue lives in one cluster slot and its scripts are cluster-safe. What
/// each key holds is described in `src/queue/queue.lua`.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// HASH id -> job record.
    pub jobs: String,
    /// HASH id -> payload.
    pub payloads: String,
    /// HASH id -> result (kept completed jobs).
    pub results: String,
    /// ZSET of ready jobs, by priority then enqueue order.
    pub waiting: String,
    /// ZSET id -> due time (ms).
    pub delayed: String,
    /// ZSET id -> lease deadline (ms).
    pub active: String,
    /// ZSET id -> time of death (ms).
    pub dead: String,
    /// ZSET id -> removal time (ms) of kept completed jobs.
    pub completed: String,
    /// ZSET of jobs queued behind their ordering group's current job.
    pub backlog: String,
    /// HASH group -> the group's current job.
    pub groups: String,
    /// HASH of counters and settings (paused, rate limit).
    pub meta: String,
    /// ZSET lease token -> start time (ms): the rate limit's log.
    pub rate: String,
    /// HASH of the per-minute event counts of the last hour.
    pub history: String,
}

impl QueueKeys {
    /// The keys' names, in the order of the scripts' `KEYS`.
    pub const NAMES: [&'static str; 13] = [
        "jobs",
        "payloads",
        "results",
        "waiting",
        "delayed",
        "active",
        "dead",
        "completed",
        "backlog",
        "groups",
        "meta",
        "rate",
        "history",
    ];

    /// The keys of the queue with qualified name `queue`.
    pub fn new(queue: &str) -> Self {
        let base = tagged(Space::Queue, queue);
        let key = |name: &str| format!("{base}:{name}");
        Self {
            jobs: key("jobs"),
            payloads: key("payloads"),
            results: key("results"),
            waiting: key("waiting"),
            delayed: key("delayed"),
            active: key("active"),
            dead: key("dead"),
            completed: key("completed"),
            backlog: key("backlog"),
            groups: key("groups"),
            meta: key("meta"),
            rate: key("rate"),
            history: key("history"),
        }
    }

    /// The keys in the order of [`QueueKeys::NAMES`], for a script's `KEYS`.
    pub fn in_script_order(&self) -> [&str; 13] {
        [
            &self.jobs,
            &self.payloads,
            &self.results,
            &self.waiting,
            &self.delayed,
            &self.active,
            &self.dead,
            &self.completed,
            &self.backlog,
            &self.groups,
            &self.meta,
            &self.rate,
            &self.history,
        ]
    }

    /// The Lua that names the keys for the scripts: `local K = { jobs = KEYS[1], ... }`.
    pub fn lua_table() -> String {
        let fields: Vec<String> = Self::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name} = KEYS[{}]", i + 1))
            .collect();
        format!("local K = {{ {} }}\n", fields.join(", "))
    }
}

/// The fields of a queue's `meta` hash ([`QueueKeys::meta`]). The scripts get
/// them as the Lua table `META` ([`QueueMeta::lua_table`]) and write
/// `META.paused`, so a field's name is written once, here.
pub struct QueueMeta;

impl QueueMeta {
    /// Counter: the last enqueue sequence number (FIFO order).
    pub const SEQ: &'static str = "seq";
    /// Counter: the last lease number (part of every lease token).
    pub const LEASE: &'static str = "lease";
    /// Present (1) while the queue is paused.
    pub const PAUSED: &'static str = "paused";
    /// The rate limit: most leases per window.
    pub const RATE_MAX: &'static str = "rate_max";
    /// The rate limit's window, in ms.
    pub const RATE_WINDOW: &'static str = "rate_window";
    /// Counter: jobs created (a repeated job id counts once).
    pub const ENQUEUED: &'static str = "enqueued";
    /// Counter: leases handed out (deliveries started).
    pub const STARTED: &'static str = "started";
    /// Counter: jobs acknowledged.
    pub const COMPLETED: &'static str = "completed";
    /// Counter: failed deliveries that will be retried (Nack, a lease that
    /// expired, a consumer that left with the job).
    pub const RETRIED: &'static str = "retried";
    /// Counter: jobs that went to the dead letters.
    pub const DEAD_LETTERED: &'static str = "dead_lettered";
    /// Counter: of those, jobs a consumer failed for good (a permanent Nack);
    /// the others ran out of attempts.
    pub const DEAD_REJECTED: &'static str = "dead_rejected";
    /// Counter: leases that expired (the job was retried or dead-lettered).
    pub const EXPIRED: &'static str = "expired";

    /// The event counters, in the order [`QueueCounters`] holds them.
    pub const COUNTERS: [&'static str; 7] = [
        Self::ENQUEUED,
        Self::STARTED,
        Self::COMPLETED,
        Self::RETRIED,
        Self::DEAD_LETTERED,
        Self::DEAD_REJECTED,
        Self::EXPIRED,
    ];

    /// The counters also kept per minute for the last hour (the queue's
    /// `history` hash), in the order `GetHistory` reports them.
    pub const HISTORY: [&'static str; 5] = [
        Self::ENQUEUED,
        Self::STARTED,
        Self::COMPLETED,
        Self::RETRIED,
        Self::DEAD_LETTERED,
    ];

    /// The settings and sequence fields (the counters are [`Self::COUNTERS`]).
    pub const SETTINGS: [&'static str; 5] = [
        Self::SEQ,
        Self::LEASE,
        Self::PAUSED,
        Self::RATE_MAX,
        Self::RATE_WINDOW,
    ];

    /// Every field, by the name the Lua table uses (the same as its value).
    pub fn all() -> impl Iterator<Item = &'static str> {
        Self::SETTINGS.into_iter().chain(Self::COUNTERS)
    }

    /// The Lua that names the fields for the scripts: `local META = { seq =
    /// 'seq', ... }`, and the set of counters kept per minute: `local HISTORY
    /// = { enqueued = true, ... }`.
    pub fn lua_table() -> String {
        let fields: Vec<String> = Self::all()
            .map(|name| format!("{name} = '{name}'"))
            .collect();
        let history: Vec<String> = Self::HISTORY
            .iter()
            .map(|name| format!("{name} = true"))
            .collect();
        format!(
            "local META = {{ {} }}\nlocal HISTORY = {{ {} }}\n",
            fields.join(", "),
            history.join(", ")
        )
    }
}

/// A queue's event counters since it was created, in the order of
/// [`QueueMeta::COUNTERS`].
pub type QueueCounters = [u64; 7];

/// The Redis key for the user key `name` of `tenant` in `space`:
/// `rw:c:<escaped name>` (`rw:acme/c:...`). The whole key is hashed for the
/// cluster slot, so user keys spread over slots.
pub fn user_key(tenant: Option<&str>, space: Space, name: &str) -> String {
    space_key(tenant, space.tag(), format_args!("{}", escape(name)))
}

/// Escapes hash-tag braces (and the escape character itself) in a user name.
pub fn escape(name: &str) -> Cow<'_, str> {
    if !name.contains(['%', '{', '}']) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for ch in name.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// The Redis Cluster hash slot (0..16384) of a key, honouring `{hash tags}`.
pub fn hash_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % 16384
}

/// CRC-16/XMODEM, the checksum Redis Cluster uses for key slots.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_pinned() {
        assert_eq!(user_key(None, Space::Cache, "user:42"), "rw:c:user:42");
        assert_eq!(user_key(None, Space::Cache, "a{b}c"), "rw:c:a%7Bb%7Dc");
        assert_eq!(user_key(None, Space::Cache, "100%"), "rw:c:100%25");
        assert_eq!(
            user_key(Some("acme"), Space::Cache, "user:42"),
            "rw:acme/c:user:42"
        );
    }

    #[test]
    fn tenant_keys_are_pinned_and_keep_the_slot_of_the_name() {
        let mail = qualify(Some("acme"), "mail");
        assert_eq!(mail, "acme/mail");
        assert_eq!(qualify(None, "mail"), "mail");
        let keys = QueueKeys::new(&mail);
        assert_eq!(keys.jobs, "rw:acme/q:{mail}:jobs");
        assert_eq!(hash_slot(keys.jobs.as_bytes()), hash_slot(b"mail"));
        assert_eq!(stream_keys("acme/orders:dead").0, "rw:acme/s:{orders}:dead");
        assert_eq!(
            lock_keys("acme/invoice-7")[0],
            "rw:acme/l:{invoice-7}:owner"
        );
        assert_eq!(unqualify(Some("acme"), "acme/mail"), Some("mail"));
        assert_eq!(unqualify(None, "acme/mail"), None);
        assert_eq!(unqualify(Some("acme"), "mail"), None);
        assert_eq!(unqualify(Some("other"), "acme/mail"), None);
        assert_eq!(unqualify(None, "mail"), Some("mail"));
        assert!(tenant_name("acme-eu_1").is_ok());
        for bad in ["", "Acme", "a/b", "a:b", &"x".repeat(65)] {
            assert!(tenant_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn queue_keys_are_pinned_and_share_one_slot() {
        let keys = QueueKeys::new("mail");
        assert_eq!(keys.jobs, "rw:q:{mail}:jobs");
        assert_eq!(keys.waiting, "rw:q:{mail}:waiting");
        assert_eq!(keys.rate, "rw:q:{mail}:rate");
        let slot = hash_slot(b"mail");
        let in_order = keys.in_script_order();
        assert!(in_order.iter().all(|k| hash_slot(k.as_bytes()) == slot));
        assert_eq!(QueueKeys::new("a{b}").jobs, "rw:q:{a%7Bb%7D}:jobs");
    }

    #[test]
    fn the_script_order_follows_the_names_the_lua_table_uses() {
        let keys = QueueKeys::new("mail");
        for (key, name) in keys.in_script_order().iter().zip(QueueKeys::NAMES) {
            assert_eq!(*key, format!("rw:q:{{mail}}:{name}"));
        }
        let table = QueueKeys::lua_table();
        assert!(table.starts_with("local K = { jobs = KEYS[1], payloads = KEYS[2],"));
        assert!(table.ends_with("history = KEYS[13] }\n"), "{table}");
    }

    #[test]
    fn stream_keys_are_pinned() {
        let (stream, dead, groups) = stream_keys("orders");
        assert_eq!(stream, "rw:s:{orders}");
        assert_eq!(dead, "rw:s:{orders}:dead");
        assert_eq!(groups, "rw:s:{orders}:groups");
        // The dead-letter stream is addressable by its user name, in the same slot.
        assert_eq!(stream_keys("orders:dead").0, "rw:s:{orders}:dead");
        assert_eq!(hash_slot(stream.as_bytes()), hash_slot(dead.as_bytes()));
    }

    #[test]
    fn lock_keys_are_pinned() {
        assert_eq!(
            lock_keys("invoice-7"),
            [
                "rw:l:{invoice-7}:owner",
                "rw:l:{invoice-7}:fence",
                "rw:l:{invoice-7}:waiters"
            ]
        );
    }

    #[test]
    fn the_held_lock_index_is_in_one_slot() {
        let [leases, tokens] = HELD_LOCKS;
        assert_eq!(hash_slot(leases.as_bytes()), hash_slot(tokens.as_bytes()));
    }

    #[test]
    fn pubsub_channels_are_pinned() {
        assert_eq!(pubsub_channel(None, "orders.eu", false), "rw:ps:orders.eu");
        assert_eq!(pubsub_channel(None, "orders.eu", true), "rw:pss:orders.eu");
        assert_eq!(pubsub_channel(None, "order.*", false), "rw:ps:order.*");
        let tenant = pubsub_channel(Some("acme"), "orders.eu", true);
        assert_eq!(tenant, "rw:acme/pss:orders.eu");
        assert_eq!(user_channel(&tenant), "orders.eu");
        assert_eq!(user_channel("rw:ps:a/b"), "a/b");
        assert_eq!(user_channel("rw:pss:x"), "x");
        assert_eq!(user_channel("elsewhere"), "elsewhere");
    }

    #[test]
    fn escaping_keeps_names_distinct() {
        // Without escaping the '%' itself, "%7B" and "{" would collide.
        assert_ne!(escape("%7B"), escape("{"));
    }

    #[test]
    fn user_names_cannot_choose_a_slot() {
        // "{x}" would hash only "x" if the braces reached Redis.
        let a = user_key(None, Space::Cache, "{x}1");
        let b = user_key(None, Space::Cache, "{x}2");
        assert!(!a.contains('{'));
        assert_ne!(hash_slot(a.as_bytes()), hash_slot(b.as_bytes()));
    }

    #[test]
    fn slots_match_redis() {
        // Reference values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        // An empty tag "{}" does not count: the whole key is hashed.
        assert_eq!(
            hash_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % 16384
        );
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
    }
}
